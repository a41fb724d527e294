"""Protobuf wire encoding for the messages the store encodes by hand (pages of stored records,
deliveries, append answers): the hot paths, where building message objects costs more than the
work. Field numbers used by hand are pinned by tests/unit/test_sql_seams.py."""


def varint(value: int) -> bytes:
    """An unsigned varint."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: int, body: bytes) -> bytes:
    """A length-delimited field: its tag byte (field number << 3 | 2), length and body."""
    return bytes((tag,)) + varint(len(body)) + body
