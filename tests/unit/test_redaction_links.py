"""Signed links withheld and given back (`core.links`): the withheld form
opens nothing, the restored one is the very link that was made, and nobody
gets a link signed by writing a withheld form by hand."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from core.links import check_path, restore_signatures, sign_path, withhold_signatures

SECRET = "link-secret-for-tests"
PATH = "/v1/envelopes/ENF-1/shared"


def test_a_withheld_link_comes_back_as_it_was() -> None:
    signed, _ = sign_path(SECRET, PATH, 3600)
    for base in ("https://enf.example", "https://enf.example/behind/a/proxy", ""):
        text = f"Your notarized document ENF-1 is ready: {base}{signed}"
        withheld = withhold_signatures(text)
        sig = parse_qs(urlsplit(signed).query)["sig"][0]
        assert sig not in withheld and "&sig_sha256=" in withheld
        assert withhold_signatures(withheld) == withheld
        assert restore_signatures(SECRET, withheld) == text
        query = parse_qs(urlsplit(restore_signatures(SECRET, withheld).split(": ")[1]).query)
        assert check_path(SECRET, PATH, query["expires"][0], query["sig"][0]) is None


def test_only_this_servers_signatures_come_back() -> None:
    signed, _ = sign_path(SECRET, PATH, 3600)
    withheld = withhold_signatures(signed)
    assert restore_signatures("another key", withheld) == withheld  # stays unusable
    # Written by hand: a link to another envelope, a digest of anything.
    forged = withheld.replace("ENF-1", "ENF-2")
    assert restore_signatures(SECRET, forged) == forged
    bogus = "/v1/envelopes/ENF-3/shared?expires=99999999999&sig_sha256=" + "0" * 64
    assert restore_signatures(SECRET, bogus) == bogus


def test_text_without_links_is_untouched() -> None:
    for text in ("", "no link here", "sig=abc", "a&sig_sha256=short"):
        assert withhold_signatures(text) == text
        assert restore_signatures(SECRET, text) == text
