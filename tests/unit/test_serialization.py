from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from conveyor import ArgumentEncodingError
from conveyor.serialization import dumps, encode_args, loads


def test_tagged_types_round_trip() -> None:
    value = {
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "naive": datetime(2026, 1, 2, 3, 4, 5),
        "day": date(2026, 1, 2),
        "id": UUID("12345678-1234-5678-1234-567812345678"),
        "price": Decimal("19.99"),
        "nested": [{"d": date(2020, 2, 29)}],
    }
    assert loads(dumps(value)) == value


def test_a_user_dict_that_looks_like_a_tag_survives() -> None:
    value = {"$type": "datetime", "value": "not a date"}
    assert loads(dumps(value)) == value


def test_tuples_become_lists_and_plain_json_is_untouched() -> None:
    assert loads(dumps((1, "a", None, True, 2.5))) == [1, "a", None, True, 2.5]
    assert encode_args((1, "two", None)) == '[1,"two",null]'


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (object(), "args[0]"),
        ({1, 2}, "args[0]"),
        (b"bytes", "args[0]"),
        (math.nan, "args[0]"),
        ({"k": [1, object()]}, "args[0].k[1]"),
        ({1: "int key"}, "args[0]"),
    ],
)
def test_unencodable_values_raise_type_error_naming_the_place(value: object, where: str) -> None:
    with pytest.raises(TypeError) as info:
        encode_args([value])
    assert isinstance(info.value, ArgumentEncodingError)
    assert where in str(info.value)
