"""Graph structure of every ONNX variant, checked without timing anything.

Rules from the variant's definition (a level-2+ BERT graph has Attention and SkipLayerNormalization
fusions; an int8 variant has its MatMuls quantized and is at most --ortgate-int8-max-size-fraction of its
fp32 parent's size), and the expected structure recorded for this model on the first run (in
--ortgate-structure-dir): a lost fusion or fewer quantized nodes fails, naming them.
"""


def test_graph_structure(ortgate, ortgate_candidate):
    check = ortgate.structure(ortgate_candidate)
    assert check.passed, check.message
