"""The promotion protocol file: the shipped default, overrides, hashing, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mammo.protocol import PromotionProtocol, ProtocolError


def test_the_shipped_default_is_the_documented_defaults() -> None:
    shipped = PromotionProtocol.load()
    assert shipped == PromotionProtocol()
    assert shipped.source == "mammo/protocols/default.yaml"
    assert shipped.evidence.min_breasts == 100 and shipped.evidence.min_positive_breasts == 20
    assert shipped.primary.metric == "auc" and shipped.validation.required is True


def test_a_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("name: site-a\nversion: 3\nevidence:\n  min_positive_breasts: 40\n")
    protocol = PromotionProtocol.load(path)
    assert (protocol.name, protocol.version, protocol.source) == ("site-a", 3, str(path))
    assert protocol.evidence.min_positive_breasts == 40
    assert protocol.evidence.min_breasts == PromotionProtocol().evidence.min_breasts


def test_the_hash_follows_the_content_not_the_file() -> None:
    default = PromotionProtocol()
    same = PromotionProtocol.from_dict({"primary": {"margin": 0.02}}, source="elsewhere.yaml")
    assert same.content_hash() == default.content_hash()
    assert default.with_primary(margin=0.05).content_hash() != default.content_hash()
    assert default.with_primary(margin=None, metric=None) is default


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"primary": {"margin": -1}}, "primary.margin must be in [0, 1)"),
        ({"primary": {"metric": "accuracy"}}, "primary.metric must be one of"),
        ({"primary": {"metrc": "auc"}}, "unknown key(s) ['metrc'] in primary"),
        ({"thresholds": {}}, "unknown protocol key(s) ['thresholds']"),
        ({"evidence": {"min_breasts": 10.5}}, "evidence.min_breasts must be an integer"),
        ({"first_model": {"auc": "high"}}, "first_model.auc must be a number"),
        ({"first_model": {"ppv": 0.1}}, "first_model.ppv must be one of"),
        ({"validation": {"required": "yes"}}, "validation.required must be true or false"),
        ({"subgroups": {"columns": "site_id"}}, "subgroups.columns must be a list"),
        ({"primary": {"margin": None}}, "primary.margin must be a number"),
        ({"operating_point": {"sensitivity_margin": 2}}, "in [0, 1], or null"),
        ({"evaluation": {"specificities": [0.9, 1.5]}}, "evaluation.specificities must be"),
    ],
)
def test_a_wrong_key_or_value_is_one_clear_error(content: dict, message: str) -> None:
    with pytest.raises(ProtocolError) as error:
        PromotionProtocol.from_dict(content)
    assert message in str(error.value)


def test_unreadable_or_invalid_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="cannot read protocol"):
        PromotionProtocol.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("primary: [unclosed\n")
    with pytest.raises(ProtocolError, match="is not valid YAML"):
        PromotionProtocol.load(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ProtocolError, match="expected a mapping"):
        PromotionProtocol.load(listed)
