"""docs/osc-api.md is generated from the registry and must be current."""

from pathlib import Path

from studiod.controllers.docs import osc_api_page

PAGE = Path(__file__).resolve().parents[2] / "docs" / "osc-api.md"


def test_the_osc_api_page_is_current():
    assert PAGE.read_text(encoding="utf-8") == osc_api_page(), (
        "docs/osc-api.md is stale: python -m studiod.controllers.docs > docs/osc-api.md"
    )


def test_the_page_documents_every_protocol_message_the_server_answers():
    text = PAGE.read_text(encoding="utf-8")
    for message in ("/subscribe", "/unsubscribe", "/meters/loudness", "/meters/channels",
                    "/meters/correlation", "/meters/inputs", "/alert", "/error", "/nudge",
                    "/step", "/toggle"):  # fmt: skip
        assert f"`{message}" in text, message
