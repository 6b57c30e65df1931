"""Where models and labeled data come from: local folders, the hub, the built-in models, PyPI files."""
