"""Label schemas: default nmc4, YAML schemas, validation of label volumes."""

import numpy as np
import pytest

from crackseg.errors import CracksegError, InputError
from crackseg.labels import IGNORE, NMC4, LabelSchema, load_schema, validate_labels


def test_nmc4_matches_design():
    assert NMC4.classes == {"matrix": 0, "particle": 1, "crack": 2, "pore": 3}
    assert NMC4.ignore == IGNORE == 255
    assert load_schema(None) is NMC4 and load_schema("nmc4") is NMC4


def test_yaml_schema(tmp_path):
    p = tmp_path / "cathode3.yaml"
    p.write_text("name: cathode3\nclasses:\n  particle: 0\n  binder: 1\n  pore: 2\n")
    s = load_schema(p)
    assert s.names == ["particle", "binder", "pore"] and s.num_classes == 3
    assert s.ignore == 255 and not s.has("crack")
    lut = s.index_lut()
    assert lut[0] == 0 and lut[2] == 2 and lut[255] == -1 and lut[7] == -1
    np.testing.assert_array_equal(s.values_lut()[[0, 1, 2]], [0, 1, 2])


@pytest.mark.parametrize("text,msg", [
    ("name: x\n", "classes"),
    ("classes:\n  a: 0\n  b: 0\n", "share one value"),
    ("classes:\n  a: 300\n", "0..254"),
    ("classes:\n  a: 1\nignore: 1\n", "ignore value"),
    ("classes: [unclosed\n", "not valid YAML"),
])
def test_bad_yaml_schema(tmp_path, text, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(CracksegError, match=msg):
        load_schema(p)


def test_missing_schema_file(tmp_path):
    with pytest.raises(InputError, match="label schema not found"):
        load_schema(tmp_path / "none.yaml")


def test_validate_labels_accepts_sparse_and_rejects_unknown():
    lab = np.array([[0, 1, 2], [3, 255, 1]], dtype=np.uint8)
    assert validate_labels(lab).tolist() == [0, 1, 2, 3, 255]
    with pytest.raises(InputError, match="label values 255 are not in schema"):
        validate_labels(lab, allow_ignore=False)
    lab[0, 0] = 7
    with pytest.raises(InputError, match="lab.tif: label values 7 are not in schema 'nmc4'"):
        validate_labels(lab, source="lab.tif")


def test_validate_labels_rejects_fractional_values():
    with pytest.raises(InputError, match="non-integer dtype"):
        validate_labels(np.array([0.5, 1.0]))


def test_schema_is_frozen():
    s = LabelSchema("a", {"x": 0})
    with pytest.raises(AttributeError):
        s.name = "b"
