"""Graph structure of every ONNX variant, checked without timing anything.

Rules from the variant's definition and the model's type (a level-2+ graph has the fusions ONNX Runtime
writes for that model type, e.g. one Attention per attention block of a BERT; an int8 variant leaves at most
1 - --ortgate-int8-min-weight-share of the asked-for operators' weights in fp32), and the expected structure
recorded for this model on the first run (in --ortgate-structure-dir): a lost fusion or fewer quantized
nodes fails, naming them.
"""


def test_graph_structure(ortgate, ortgate_candidate):
    check = ortgate.structures.check(ortgate_candidate)
    assert check.passed, check.message
