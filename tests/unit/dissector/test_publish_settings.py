"""The dissector's publishing settings: a linger outside its bounds is refused at start-up, by name."""

from __future__ import annotations

import pytest

from wiretide.common.settings import SettingsError, load_settings
from wiretide.dissector.service import MAX_PUBLISH_LINGER_S, DissectorSettings


@pytest.mark.parametrize("linger", ["0", "-0.1", str(MAX_PUBLISH_LINGER_S + 1), "soon"])
def test_a_linger_out_of_bounds_is_refused_naming_the_variable(linger: str) -> None:
    with pytest.raises(SettingsError, match="WIRETIDE_DISSECTOR_PUBLISH_LINGER_S"):
        load_settings(DissectorSettings, "dissector", {"WIRETIDE_DISSECTOR_PUBLISH_LINGER_S": linger})


def test_the_default_linger_and_message_size_apply_unless_set() -> None:
    default = load_settings(DissectorSettings, "dissector", {})
    assert 0 < default.dissector_publish_linger_s <= 0.1 and default.dissector_publish_items > 500
    set_ = load_settings(
        DissectorSettings,
        "dissector",
        {"WIRETIDE_DISSECTOR_PUBLISH_LINGER_S": "0.02", "WIRETIDE_DISSECTOR_PUBLISH_ITEMS": "100"},
    )
    assert (set_.dissector_publish_linger_s, set_.dissector_publish_items) == (0.02, 100)
