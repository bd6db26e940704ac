import pytest

from gateway.engine.dlp import validators as v

from .samples import iban_complete, luhn_complete


@pytest.mark.parametrize("number, ok", [
    ("4111111111111111", True), ("4111111111111112", False), ("79927398713", True), ("79927398710", False),
])
def test_luhn(number, ok):
    assert v.luhn(number) is ok


@pytest.mark.parametrize("text, ok", [
    ("4539 1488 0343 6467", True),          # Visa, grouped by 4
    ("4539-1488-0343-6467", True),
    ("4539148803436467", True),
    ("3782 822463 10005", True),            # Amex 4-6-5
    ("4539 1488-0343 6467", False),         # mixed separators
    ("4 5 3 9 1 4 8 8 0 3 4 3 6 4 6 7", False),
    ("4539148803436468", False),            # Luhn
    (luhn_complete("12345678901234"), False),  # no issuer starts with 1 (15 digits)
])
def test_card_number(text, ok):
    assert v.card_number(text) is ok


def test_card_number_issuer_lengths():
    assert v.card_number(luhn_complete("4" + "1" * 11))          # Visa 13
    assert not v.card_number(luhn_complete("4" + "1" * 13))      # Visa 15
    assert v.card_number(luhn_complete("34" + "1" * 12))         # Amex 15
    assert not v.card_number(luhn_complete("34" + "1" * 13))     # Amex 16


@pytest.mark.parametrize("text, ok", [
    ("GB82 WEST 1234 5698 7654 32", True), ("GB82WEST12345698765432", True), ("gb82west12345698765432", True),
    ("DE89370400440532013000", True), (iban_complete("FR", "20041010050500013M02606"), True),
    ("GB83WEST12345698765432", False), ("GB82WEST1234569876543", False), ("XX82WEST12345698765432", False),
])
def test_iban(text, ok):
    assert v.iban(text) is ok


@pytest.mark.parametrize("text, ok", [
    ("078-05-1121", True), ("123 45 6789", True), ("000-12-3456", False), ("666-12-3456", False),
    ("900-12-3456", False), ("123-00-4567", False), ("123-45-0000", False), ("123-45 6789", False),
    ("111-11-1111", False),
])
def test_us_ssn(text, ok):
    assert v.us_ssn(text) is ok


@pytest.mark.parametrize("text, ok", [
    ("(415) 555-0134", True), ("415-555-0134", True), ("+1 415 555 0134", True), ("+44 20 7946 0958", True),
    ("+41 (0)96 471 07 95", True), ("0341 8387176", True), ("555-0134", True), ("345-899-3560x4587", True),
    ("2024-01-15", False), ("15/01/2024", False), ("192.168.100.200", False), ("123-45-6789", False),
    ("12 34", False), ("+2155", False), ("1234 5678 9012 3456", False), ("555-555-5555", False),
])
def test_phone_number(text, ok):
    assert v.phone_number(text) is ok


@pytest.mark.parametrize("text, ok", [
    ("hunter22", True), ('"open sesame"', True), ("secret", True), ("#gets0m3", True),
    ("abc", False), ("None", False), ("string", False), ("********", False), ("$DB_PASSWORD", False),
    ("${{ secrets.X }}", False), ("{{ password }}", False), ("<your password>", False), ("/run/secrets/db", False),
    ("#{datastore['DBPASSWORD']}", False), ('" + getPassword() + "', False), ("arn:aws:iam::aws:policy/X", False),
])
def test_secret_value(text, ok):
    assert v.secret_value(text) is ok


def test_shape():
    check = v.shape(4, "XY", 8)
    assert check("abcdXYef") and not check("abcXYdef") and not check("abcdXYefg")
