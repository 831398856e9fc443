#!/usr/bin/env python3
"""Writes tests/corpus/bad_requests.jsonl: hostile and malformed requests for apikeys.v1.ApiKeyService.

Standard library only. Deterministic: one seeded RNG drawn in a fixed order, cases written in the order
they are made, so re-running gives the same file byte for byte.

Every case is checked, before it is written, against a small model of the server (`oracle` below):
the auth layer (src/auth/layer.rs, src/methods.rs), tonic's size limit, prost's decoder (including its
recursion limit and UTF-8 check), and the validation of src/service/convert.rs and src/domain/mod.rs.
A case whose hand-written expectation disagrees with the model stops the script, so the two readings
of the code check each other. See README.md beside this file for the line format.
"""

import base64
import collections
import hashlib
import ipaddress
import json
import os
import random
import re
import struct
import sys
import time
import unicodedata
import zlib

SEED = 0x61706B73  # "apks"
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "bad_requests.jsonl")

# transport.max_request_bytes (src/config.rs, default 64 KiB): tonic refuses a larger message with
# OUT_OF_RANGE ("decoded message length too large") before the handler runs, but after the auth layer.
MAX_REQUEST_BYTES = 64 * 1024
OVERSIZE = ["OUT_OF_RANGE", "RESOURCE_EXHAUSTED"]

FORBIDDEN_CODES = {"INTERNAL", "UNKNOWN", "UNAVAILABLE"}

# ------------------------------------------------------------------------------------------------
# Protobuf wire encoding
# ------------------------------------------------------------------------------------------------

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


def varint(n):
    """Base-128 varint of n; negative numbers as their 64-bit two's complement (10 bytes)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire_type):
    return varint((field << 3) | wire_type)


def f_varint(field, n):
    return key(field, VARINT) + varint(n)


def f_len(field, data):
    return key(field, LEN) + varint(len(data)) + data


def f_str(field, s):
    return f_len(field, s.encode("utf-8") if isinstance(s, str) else bytes(s))


def f_fixed32(field, n):
    return key(field, I32) + struct.pack("<I", n & 0xFFFFFFFF)


def f_fixed64(field, n):
    return key(field, I64) + struct.pack("<Q", n & ((1 << 64) - 1))


def f_group(field, inner=b""):
    return key(field, SGROUP) + inner + key(field, EGROUP)


# ------------------------------------------------------------------------------------------------
# The messages, with the field numbers of proto/apikeys/v1/api_keys.proto
# ------------------------------------------------------------------------------------------------

SCALARS = {"string", "bool", "int32", "int64", "enum"}
SCHEMA = {}


def message(name, *fields):
    table = {}
    for number, fname, kind in fields:
        repeated = kind.startswith("repeated ")
        kind = kind[len("repeated "):] if repeated else kind
        table[number] = (fname, kind, repeated)
    SCHEMA[name] = table


# google.protobuf.Timestamp: 1 seconds (int64), 2 nanos (int32)
message("Timestamp", (1, "seconds", "int64"), (2, "nanos", "int32"))
# google.protobuf.Duration: 1 seconds (int64), 2 nanos (int32)
message("Duration", (1, "seconds", "int64"), (2, "nanos", "int32"))
# google.protobuf.FieldMask: 1 paths (repeated string)
message("FieldMask", (1, "paths", "repeated string"))
# apikeys.v1.Actor: 1 type (ActorType), 2 id, 3 display_name
message("Actor", (1, "type", "enum"), (2, "id", "string"), (3, "display_name", "string"))
# apikeys.v1.RateLimit: 1 requests (int64), 2 window (Duration)
message("RateLimit", (1, "requests", "int64"), (2, "window", "Duration"))
# apikeys.v1.ApiKey: 1 id, 2 org_id, 3 display_name, 4 description, 5 permissions (repeated), 6 app_id,
# 7 created_by (Actor), 8 updated_by (Actor), 9 create_time, 10 update_time, 11 etag, 12 state (State),
# 13 failed_attempts (int64), 14 last_failure_time, 15 expire_time, 16 previous_secret_expire_time,
# 17 delete_time, 18 purge_time, 19 allowed_cidrs (repeated), 20 rate_limit (RateLimit),
# 21 last_used_time, 22 last_used_address, 23 last_used_agent (times are Timestamps)
message(
    "ApiKey",
    (1, "id", "string"),
    (2, "org_id", "string"),
    (3, "display_name", "string"),
    (4, "description", "string"),
    (5, "permissions", "repeated string"),
    (6, "app_id", "string"),
    (7, "created_by", "Actor"),
    (8, "updated_by", "Actor"),
    (9, "create_time", "Timestamp"),
    (10, "update_time", "Timestamp"),
    (11, "etag", "string"),
    (12, "state", "enum"),
    (13, "failed_attempts", "int64"),
    (14, "last_failure_time", "Timestamp"),
    (15, "expire_time", "Timestamp"),
    (16, "previous_secret_expire_time", "Timestamp"),
    (17, "delete_time", "Timestamp"),
    (18, "purge_time", "Timestamp"),
    (19, "allowed_cidrs", "repeated string"),
    (20, "rate_limit", "RateLimit"),
    (21, "last_used_time", "Timestamp"),
    (22, "last_used_address", "string"),
    (23, "last_used_agent", "string"),
)
# apikeys.v1.OrgPolicy: 1 lockout_threshold (int32), 2 max_key_lifetime (Duration)
message("OrgPolicy", (1, "lockout_threshold", "int32"), (2, "max_key_lifetime", "Duration"))
# apikeys.v1.KeyUsage: 1 key_id, 2 last_used_time (Timestamp), 3 last_used_address, 4 last_used_agent,
# 5 exercised_permissions (repeated)
message(
    "KeyUsage",
    (1, "key_id", "string"),
    (2, "last_used_time", "Timestamp"),
    (3, "last_used_address", "string"),
    (4, "last_used_agent", "string"),
    (5, "exercised_permissions", "repeated string"),
)
# apikeys.v1.CreateApiKeyRequest: 1 display_name, 2 description, 3 permissions (repeated), 4 app_id,
# 5 expire_time (Timestamp), 6 allowed_cidrs (repeated), 7 rate_limit (RateLimit)
message(
    "CreateApiKeyRequest",
    (1, "display_name", "string"),
    (2, "description", "string"),
    (3, "permissions", "repeated string"),
    (4, "app_id", "string"),
    (5, "expire_time", "Timestamp"),
    (6, "allowed_cidrs", "repeated string"),
    (7, "rate_limit", "RateLimit"),
)
# apikeys.v1.GetApiKeyRequest: 1 id
message("GetApiKeyRequest", (1, "id", "string"))
# apikeys.v1.ListApiKeysRequest: 1 page_size (int32), 2 page_token, 3 name_contains, 4 app_id,
# 5 permission, 6 state (ApiKey.State), 7 expiring_before (Timestamp), 8 show_deleted (bool)
message(
    "ListApiKeysRequest",
    (1, "page_size", "int32"),
    (2, "page_token", "string"),
    (3, "name_contains", "string"),
    (4, "app_id", "string"),
    (5, "permission", "string"),
    (6, "state", "enum"),
    (7, "expiring_before", "Timestamp"),
    (8, "show_deleted", "bool"),
)
# apikeys.v1.UpdateApiKeyRequest: 1 api_key (ApiKey), 2 update_mask (FieldMask), 3 etag,
# 4 acknowledge_app_impact (bool)
message(
    "UpdateApiKeyRequest",
    (1, "api_key", "ApiKey"),
    (2, "update_mask", "FieldMask"),
    (3, "etag", "string"),
    (4, "acknowledge_app_impact", "bool"),
)
# apikeys.v1.RegenerateApiKeySecretRequest: 1 id, 2 etag, 3 acknowledge_app_impact (bool),
# 4 previous_secret_ttl (Duration)
message(
    "RegenerateApiKeySecretRequest",
    (1, "id", "string"),
    (2, "etag", "string"),
    (3, "acknowledge_app_impact", "bool"),
    (4, "previous_secret_ttl", "Duration"),
)
# apikeys.v1.DeleteApiKeyRequest: 1 id, 2 etag, 3 acknowledge_app_impact (bool)
message("DeleteApiKeyRequest", (1, "id", "string"), (2, "etag", "string"), (3, "acknowledge_app_impact", "bool"))
# apikeys.v1.UndeleteApiKeyRequest: 1 id, 2 etag
message("UndeleteApiKeyRequest", (1, "id", "string"), (2, "etag", "string"))
# apikeys.v1.AuthenticateRequest: 1 key_id, 2 secret, 3 token, 4 required_permissions (repeated),
# 5 client_address, 6 caller_enforces_restrictions (bool)
message(
    "AuthenticateRequest",
    (1, "key_id", "string"),
    (2, "secret", "string"),
    (3, "token", "string"),
    (4, "required_permissions", "repeated string"),
    (5, "client_address", "string"),
    (6, "caller_enforces_restrictions", "bool"),
)
# apikeys.v1.ListPermissionsRequest: no fields
message("ListPermissionsRequest")
# apikeys.v1.UnlockApiKeyRequest: 1 id, 2 etag
message("UnlockApiKeyRequest", (1, "id", "string"), (2, "etag", "string"))
# apikeys.v1.DisableApiKeyRequest: 1 id, 2 etag, 3 acknowledge_app_impact (bool)
message("DisableApiKeyRequest", (1, "id", "string"), (2, "etag", "string"), (3, "acknowledge_app_impact", "bool"))
# apikeys.v1.EnableApiKeyRequest: 1 id, 2 etag
message("EnableApiKeyRequest", (1, "id", "string"), (2, "etag", "string"))
# apikeys.v1.ListAuditEventsRequest: 1 page_size (int32), 2 page_token, 3 key_id, 4 actor_id, 5 action,
# 6 start_time (Timestamp), 7 end_time (Timestamp)
message(
    "ListAuditEventsRequest",
    (1, "page_size", "int32"),
    (2, "page_token", "string"),
    (3, "key_id", "string"),
    (4, "actor_id", "string"),
    (5, "action", "string"),
    (6, "start_time", "Timestamp"),
    (7, "end_time", "Timestamp"),
)
# apikeys.v1.WatchAuditEventsRequest: 1 cursor, 2 start_time (Timestamp)
message("WatchAuditEventsRequest", (1, "cursor", "string"), (2, "start_time", "Timestamp"))
# apikeys.v1.GetApiKeyUsageRequest: 1 id, 2 window (Duration)
message("GetApiKeyUsageRequest", (1, "id", "string"), (2, "window", "Duration"))
# apikeys.v1.ReportKeyUsageRequest: 1 usages (repeated KeyUsage)
message("ReportKeyUsageRequest", (1, "usages", "repeated KeyUsage"))
# apikeys.v1.GetOrgPolicyRequest: no fields
message("GetOrgPolicyRequest")
# apikeys.v1.UpdateOrgPolicyRequest: 1 policy (OrgPolicy), 2 update_mask (FieldMask)
message("UpdateOrgPolicyRequest", (1, "policy", "OrgPolicy"), (2, "update_mask", "FieldMask"))
# apikeys.v1.WatchKeyChangesRequest: 1 cursor
message("WatchKeyChangesRequest", (1, "cursor", "string"))

# RPC name -> (request message, who may call it: src/methods.rs)
METHODS = collections.OrderedDict(
    [
        ("CreateApiKey", ("CreateApiKeyRequest", "admin")),
        ("GetApiKey", ("GetApiKeyRequest", "admin")),
        ("ListApiKeys", ("ListApiKeysRequest", "admin")),
        ("UpdateApiKey", ("UpdateApiKeyRequest", "admin")),
        ("RegenerateApiKeySecret", ("RegenerateApiKeySecretRequest", "admin")),
        ("DeleteApiKey", ("DeleteApiKeyRequest", "admin")),
        ("UndeleteApiKey", ("UndeleteApiKeyRequest", "admin")),
        ("Authenticate", ("AuthenticateRequest", "public")),
        ("ListPermissions", ("ListPermissionsRequest", "public")),
        ("UnlockApiKey", ("UnlockApiKeyRequest", "admin")),
        ("DisableApiKey", ("DisableApiKeyRequest", "admin")),
        ("EnableApiKey", ("EnableApiKeyRequest", "admin")),
        ("ListAuditEvents", ("ListAuditEventsRequest", "admin")),
        ("WatchAuditEvents", ("WatchAuditEventsRequest", "admin")),
        ("GetApiKeyUsage", ("GetApiKeyUsageRequest", "admin")),
        ("ReportKeyUsage", ("ReportKeyUsageRequest", "report")),
        ("GetOrgPolicy", ("GetOrgPolicyRequest", "admin")),
        ("UpdateOrgPolicy", ("UpdateOrgPolicyRequest", "admin")),
        ("WatchKeyChanges", ("WatchKeyChangesRequest", "public")),
    ]
)


def enc(mtype, _extra=b"", **values):
    """Encodes message `mtype` from field values (None: absent). Strings may be str or raw bytes,
    messages dicts (encoded recursively) or pre-encoded bytes; `_extra` is appended as is."""
    table = SCHEMA[mtype]
    names = {spec[0] for spec in table.values()}
    unknown = set(values) - names
    assert not unknown, (mtype, unknown)
    out = bytearray()
    for number in sorted(table):
        name, kind, repeated = table[number]
        value = values.get(name)
        if value is None:
            continue
        for item in value if repeated else [value]:
            if kind == "string":
                out += f_str(number, item)
            elif kind == "bool":
                out += f_varint(number, int(item))
            elif kind in ("int32", "int64", "enum"):
                out += f_varint(number, item)
            else:
                out += f_len(number, item if isinstance(item, (bytes, bytearray)) else enc(kind, **item))
    return bytes(out) + _extra


def ts(seconds=0, nanos=0):
    """A Timestamp (zero fields left out, as proto3 does)."""
    return enc("Timestamp", seconds=seconds or None, nanos=nanos or None)


def dur(seconds=0, nanos=0):
    """A Duration (zero fields left out)."""
    return enc("Duration", seconds=seconds or None, nanos=nanos or None)


def fmask(*paths):
    return enc("FieldMask", paths=list(paths))


# ------------------------------------------------------------------------------------------------
# A model of prost's decoder (prost 0.14: encoding.rs, encoding/varint.rs)
# ------------------------------------------------------------------------------------------------

RECURSION_LIMIT = 100


class DecodeError(Exception):
    pass


def read_varint(buf, pos, end):
    result = 0
    for i in range(10):
        if pos >= end:
            raise DecodeError("invalid varint")
        b = buf[pos]
        pos += 1
        if i == 9 and b >= 0x02:
            raise DecodeError("invalid varint")
        result |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            return result, pos
    raise DecodeError("invalid varint")


def read_key(buf, pos, end):
    k, pos = read_varint(buf, pos, end)
    if k > 0xFFFFFFFF:
        raise DecodeError("invalid key value")
    wire_type = k & 7
    if wire_type > 5:
        raise DecodeError("invalid wire type value")
    number = k >> 3
    if number < 1:
        raise DecodeError("invalid tag value: 0")
    return number, wire_type, pos


def skip_field(wire_type, number, buf, pos, end, ctx):
    if ctx == 0:
        raise DecodeError("recursion limit reached")
    if wire_type == VARINT:
        _, pos = read_varint(buf, pos, end)
        length = 0
    elif wire_type == I32:
        length = 4
    elif wire_type == I64:
        length = 8
    elif wire_type == LEN:
        length, pos = read_varint(buf, pos, end)
    elif wire_type == SGROUP:
        while True:
            inner, inner_type, pos = read_key(buf, pos, end)
            if inner_type == EGROUP:
                if inner != number:
                    raise DecodeError("unexpected end group tag")
                length = 0
                break
            pos = skip_field(inner_type, inner, buf, pos, end, ctx - 1)
    else:
        raise DecodeError("unexpected end group tag")
    if length > end - pos:
        raise DecodeError("buffer underflow")
    return pos + length


def defaults(mtype):
    out = {}
    for name, kind, repeated in SCHEMA[mtype].values():
        if repeated:
            out[name] = []
        elif kind == "string":
            out[name] = ""
        elif kind == "bool":
            out[name] = False
        elif kind in ("int32", "int64", "enum"):
            out[name] = 0
        else:
            out[name] = None
    return out


def to_signed(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def merge(mtype, out, buf, pos, end, ctx):
    table = SCHEMA[mtype]
    while pos < end:
        number, wire_type, pos = read_key(buf, pos, end)
        if number not in table:
            pos = skip_field(wire_type, number, buf, pos, end, ctx)
            continue
        name, kind, repeated = table[number]
        if kind in ("int32", "int64", "enum", "bool"):
            if wire_type != VARINT:
                raise DecodeError("invalid wire type")
            raw, pos = read_varint(buf, pos, end)
            value = {"int32": lambda v: to_signed(v, 32), "enum": lambda v: to_signed(v, 32),
                     "int64": lambda v: to_signed(v, 64), "bool": lambda v: v != 0}[kind](raw)
            out[name] = value
            continue
        if wire_type != LEN:
            raise DecodeError("invalid wire type")
        if kind != "string" and ctx == 0:
            raise DecodeError("recursion limit reached")
        length, pos = read_varint(buf, pos, end)
        if length > end - pos:
            raise DecodeError("buffer underflow")
        sub_end = pos + length
        if kind == "string":
            try:
                value = bytes(buf[pos:sub_end]).decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("invalid string value: data is not UTF-8 encoded")
            if repeated:
                out[name].append(value)
            else:
                out[name] = value
        elif repeated:
            out[name].append(merge(kind, defaults(kind), buf, pos, sub_end, ctx - 1))
        else:
            current = out[name] if out[name] is not None else defaults(kind)
            out[name] = merge(kind, current, buf, pos, sub_end, ctx - 1)
        pos = sub_end
    return out


def decode(mtype, body):
    return merge(mtype, defaults(mtype), body, 0, len(body), RECURSION_LIMIT)


# ------------------------------------------------------------------------------------------------
# A model of the server's checks
# ------------------------------------------------------------------------------------------------

CATALOG = {
    "read_data",
    "edit_data",
    "read_function",
    "read_playbook",
    "create_incident",
    "read_all_incidents",
    "edit_all_incidents_fields",
    "api_keys_admin",
    "api_keys_usage_report",
}
PRINCIPALS = {"admin": CATALOG, "reader": {"read_data"}, "reporter": {"api_keys_usage_report"}}
NEEDS = {"admin": "api_keys_admin", "report": "api_keys_usage_report"}
AUDIT_ACTIONS = {
    "CREATE", "BOOTSTRAP", "UPDATE", "REGENERATE_SECRET", "DELETE", "UNDELETE", "PURGE", "LOCK", "UNLOCK",
    "DISABLE", "ENABLE", "EXPIRY_WARNING", "EXPIRY_LAST_WARNING",
}
STATE_NAMES = {1: "Active", 2: "Locked", 3: "Disabled", 4: "Expired", 5: "Deleted"}
NOW = time.time()

# Rust's char::is_whitespace (the White_Space property), which str::trim strips.
RUST_WS = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {chr(c) for c in range(0x2000, 0x200B)}


class Unsure(Exception):
    """The model cannot tell; the case must carry an explicit expectation."""


class SideEffect(Exception):
    """The case would change server state in a way other cases depend on."""


def rtrim(s):
    start, end = 0, len(s)
    while start < end and s[start] in RUST_WS:
        start += 1
    while end > start and s[end - 1] in RUST_WS:
        end -= 1
    return s[start:end]


def has_cat(s, cat):
    return any(unicodedata.category(c) == cat for c in s)


def name_key(text):
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).casefold())


def name_like(raw, limit):
    text = rtrim(unicodedata.normalize("NFC", raw))
    if len(text) > limit or has_cat(text, "Cc") or has_cat(text, "Cf"):
        return None
    return text


def display_name_ok(raw):
    text = name_like(raw, 100)
    return text if text else None


def description_ok(raw):
    return len(raw) <= 1000 and not any(unicodedata.category(c) == "Cc" and c not in "\n\t\r" for c in raw)


def is_permission_name(name):
    return (len(name.encode()) <= 64 and bool(name) and "a" <= name[0] <= "z"
            and all(("a" <= c <= "z") or ("0" <= c <= "9") or c in "_.:-" for c in name[1:]))


HEX = set("0123456789abcdefABCDEF")


def parse_uuid(s):
    """uuid 1.x try_parse: simple (32), hyphenated (36), braced (38), urn (45)."""
    if not s.isascii():
        return None

    def hyphenated(t):
        if len(t) != 36 or any(t[i] != "-" for i in (8, 13, 18, 23)):
            return None
        digits = t.replace("-", "")
        return digits.lower() if len(digits) == 32 and set(digits) <= HEX else None

    if len(s) == 32:
        return s.lower() if set(s) <= HEX else None
    if len(s) == 36:
        return hyphenated(s)
    if len(s) == 38 and s[0] == "{" and s[-1] == "}":
        return hyphenated(s[1:-1])
    if len(s) == 45 and s[:9].lower() == "urn:uuid:":
        return hyphenated(s[9:])
    return None


def parse_ip(s):
    """Rust's IpAddr::from_str, for the inputs this corpus uses."""
    if re.fullmatch(r"[0-9.]+", s):
        parts = s.split(".")
        if len(parts) != 4 or any(not p or len(p) > 3 or (len(p) > 1 and p[0] == "0") or int(p) > 255 for p in parts):
            return None
        return ipaddress.IPv4Address(s)
    if ":" in s and re.fullmatch(r"[0-9A-Fa-f:.]+", s):
        try:
            return ipaddress.IPv6Address(s)
        except ValueError:
            return None
    return None


def canonical(ip):
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def cidr_ok(text):
    address, slash, prefix = text.partition("/")
    ip = parse_ip(address)
    if ip is None:
        return False
    ip = canonical(ip)
    width = 32 if isinstance(ip, ipaddress.IPv4Address) else 128
    if slash:
        if not (all(c in "0123456789" for c in prefix) and (len(prefix) == 1 or not prefix.startswith("0"))):
            return False
        if not prefix or int(prefix) > 255 or int(prefix) > width:
            return False
        bits = int(prefix)
    else:
        bits = width
    value = int(ip)
    host = (1 << (width - bits)) - 1
    return value & host == 0


def time_ok(t):
    """convert::time: google.protobuf.Timestamp's range: years 1 to 9999, nanos in [0, 1e9)."""
    if not 0 <= t["nanos"] < 1_000_000_000:
        return None
    s = t["seconds"]
    if not -62_135_596_800 <= s <= 253_402_300_799:
        return None
    return s + t["nanos"] / 1e9


def duration_ok(d):
    """convert::duration: not negative, seconds at most 10 000 years, nanos in [0, 1e9)."""
    return 0 <= d["seconds"] <= 315_576_000_000 and 0 <= d["nanos"] < 1_000_000_000


def storable(seconds):
    """Whether a time goes into a database query safely (PostgreSQL: 4713 BC to 294276 AD)."""
    if not -210_000_000_000 < seconds < 9_000_000_000_000:
        raise Unsure("time outside what PostgreSQL stores")
    return seconds


def rate_limit_ok(limit):
    if limit is None:
        return True
    ok = 1 <= limit["requests"] <= 1_000_000_000
    window = limit["window"]
    if window is None or not duration_ok(window):
        return False
    nanos = window["seconds"] * 1_000_000_000 + window["nanos"]
    return ok and 1_000_000_000 <= nanos <= 86_400 * 1_000_000_000


B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def b62_encode(data, width):
    n = int.from_bytes(data, "big")
    digits = []
    for _ in range(width):
        n, r = divmod(n, 62)
        digits.append(B62[r])
    return "".join(reversed(digits))


def b62_decode(text, nbytes):
    n = 0
    for c in text:
        d = B62.find(c) if c else -1
        if d < 0:
            return None
        n = n * 62 + d
    return n.to_bytes(nbytes, "big") if n < 256 ** nbytes else None


def token_ok(token):
    """Credential::from_token: 75 bytes, `apk_`, base62 body, CRC-32 checksum."""
    raw = token.encode("utf-8")
    if len(raw) != 75 or not token.startswith("apk_") or not token.isascii():
        return False
    checksum = b62_decode(token[69:], 4)
    if checksum is None or int.from_bytes(checksum, "big") != zlib.crc32(raw[:69]) & 0xFFFFFFFF:
        return False
    return b62_decode(token[4:69], 48) is not None


def secret_ok(secret):
    return len(secret.encode("utf-8")) == 43 and secret.isascii() and b62_decode(secret, 32) is not None


def b64url_nopad_decode(text):
    """base64 URL_SAFE_NO_PAD: URL-safe alphabet, no padding, canonical trailing bits."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != text:
        return None
    return data


def fingerprint(parts):
    digest = hashlib.sha256()
    for part in parts:
        digest.update(b"\x00" if part is None else part.encode("utf-8"))
        digest.update(b"\xff")
    return digest.digest()[:8].hex()


FP_KEYS = fingerprint([None] * 6)  # ListApiKeys without filters
FP_AUDIT = fingerprint([None] * 5)  # ListAuditEvents without filters


def decode_token(text):
    """convert::decode_token: at most 2048 bytes, base64url JSON {k, i?, f}, k without control chars
    and at most 100 characters. Returns (k, f) or None."""
    if len(text.encode("utf-8")) > 2048:
        return None
    data = b64url_nopad_decode(text)
    if data is None:
        return None

    def pairs(items):
        seen = set()
        for k, _ in items:
            if k in ("k", "i", "f") and k in seen:
                raise ValueError("duplicate field")
            seen.add(k)
        return dict(items)

    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(obj, list):
        raise Unsure("serde also reads a struct from a JSON array")
    if not isinstance(obj, dict) or not isinstance(obj.get("k"), str) or not isinstance(obj.get("f"), str):
        return None
    i = obj.get("i")
    if i is not None and not (isinstance(i, str) and parse_uuid(i)):
        return None
    k = obj["k"]
    if has_cat(k, "Cc") or len(k) > 100:
        return None
    return k, obj["f"]


RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


def rfc3339_ok(text):
    m = RFC3339.fullmatch(text)
    if not m:
        if re.fullmatch(r"[0-9TtZz:. +-]+", text):
            raise Unsure("rfc3339-like text")
        return False
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if second == 60:
        raise Unsure("leap second")
    try:
        import datetime

        datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    return True


def audit_cursor_ok(text):
    data = b64url_nopad_decode(text)
    if data is None:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    when, bar, ident = text.partition("|")
    return bool(bar) and rfc3339_ok(when) and parse_uuid(ident) is not None


def i64_parse(text):
    """Rust's i64::from_str: an optional sign, ASCII digits, in range."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 63) else None


INVALID = {"INVALID_ARGUMENT"}
NOT_FOUND = {"NOT_FOUND"}
OK = {"OK"}
TAKEN_NAMES = {name_key("Administrator")}  # the bootstrap key (keys::create_org_admin)
CREATED = []  # display names of keys the corpus creates


def sem_create(m):
    name = display_name_ok(m["display_name"])
    valid = (
        name is not None
        and description_ok(m["description"])
        and all(p in CATALOG for p in m["permissions"])
        and name_like(m["app_id"], 100) is not None
        and (m["expire_time"] is None or time_ok(m["expire_time"]) is not None)
        and len(m["allowed_cidrs"]) <= 100
        and all(cidr_ok(rtrim(c)) for c in m["allowed_cidrs"])
        and rate_limit_ok(m["rate_limit"])
    )
    if not valid:
        return INVALID
    if m["expire_time"] is not None and time_ok(m["expire_time"]) <= NOW:
        return INVALID  # OrgPolicy::expire_time: must be in the future
    if name_key(name) in TAKEN_NAMES:
        return {"ALREADY_EXISTS"}
    CREATED.append(name)
    return {"OK", "ALREADY_EXISTS"}


def sem_key_id_then_lookup(field="id"):
    def check(m):
        return NOT_FOUND if parse_uuid(rtrim(m[field])) else INVALID

    return check


def sem_list_keys(m):
    bad = m["page_size"] < 0
    permission = rtrim(m["permission"]) or None
    if permission and permission not in CATALOG:
        bad = True
    if has_cat(m["name_contains"], "Cc") or has_cat(m["app_id"], "Cc") or len(m["name_contains"]) > 100:
        bad = True
    if m["state"] not in (0, 1, 2, 3, 4, 5):
        bad = True
    if m["expiring_before"] is not None:
        at = time_ok(m["expiring_before"])
        if at is None:
            bad = True
        else:
            storable(at)
    if bad:
        return INVALID
    if m["page_token"]:
        token = decode_token(m["page_token"])
        if token is None:
            return INVALID
        name = rtrim(m["name_contains"])
        if m["expiring_before"] is not None or not name.isascii():
            if re.fullmatch(r"[0-9a-f]{16}", token[1]):
                raise Unsure("fingerprint of these filters")
            return INVALID
        parts = [
            name_key(name) if name else None,
            rtrim(m["app_id"]) or None,
            permission,
            STATE_NAMES.get(m["state"]),
            None,
            "show_deleted" if m["show_deleted"] else None,
        ]
        if token[1] != fingerprint(parts):
            return INVALID
    return OK


def sem_update(m):
    api_key = m["api_key"]
    if api_key is None or not parse_uuid(rtrim(api_key["id"])):
        return INVALID
    paths = m["update_mask"]["paths"] if m["update_mask"] is not None else []
    fields = ["display_name", "description", "permissions", "expire_time", "allowed_cidrs", "rate_limit"]
    if paths:
        chosen = set()
    else:
        chosen = {f for f in fields if api_key[f] not in ("", [], None)}
    for path in paths:
        if path == "*":
            chosen = set(fields)
        elif path in fields:
            chosen.add(path)
        else:
            return INVALID
    if not chosen:
        return INVALID
    ok = True
    if "display_name" in chosen:
        ok &= display_name_ok(api_key["display_name"]) is not None
    if "description" in chosen:
        ok &= description_ok(api_key["description"])
    if "permissions" in chosen:
        ok &= all(p in CATALOG for p in api_key["permissions"])
    if "expire_time" in chosen and api_key["expire_time"] is not None:
        ok &= time_ok(api_key["expire_time"]) is not None
    if "allowed_cidrs" in chosen:
        cidrs = api_key["allowed_cidrs"]
        ok &= len(cidrs) <= 100 and all(cidr_ok(rtrim(c)) for c in cidrs)
    if "rate_limit" in chosen:
        ok &= rate_limit_ok(api_key["rate_limit"])
    if not ok:
        return INVALID
    if "expire_time" in chosen and api_key["expire_time"] is not None and time_ok(api_key["expire_time"]) <= NOW:
        return INVALID  # checked against the org policy before the key is looked up
    return NOT_FOUND


def sem_regenerate(m):
    ttl = m["previous_secret_ttl"]
    if ttl is not None:
        if not duration_ok(ttl) or ttl["seconds"] * 1_000_000_000 + ttl["nanos"] > 7 * 86_400 * 1_000_000_000:
            return INVALID
    return NOT_FOUND if parse_uuid(rtrim(m["id"])) else INVALID


def sem_authenticate(m):
    if len(m["required_permissions"]) > 256:
        return INVALID
    bad = not all(is_permission_name(p) for p in m["required_permissions"])
    address = rtrim(m["client_address"])
    if address and parse_ip(address) is None:
        bad = True
    if bad:
        return INVALID
    token_given = m["token"] != ""
    parts_given = m["key_id"] != "" or m["secret"] != ""
    if token_given == parts_given:
        return INVALID
    # A malformed credential and an unknown key get the same answer; the corpus holds no real one.
    return {"UNAUTHENTICATED"}


def sem_audit_list(m):
    bad = m["page_size"] < 0
    key_id = rtrim(m["key_id"])
    if key_id and not parse_uuid(key_id):
        bad = True
    if m["action"] and rtrim(m["action"]).upper() not in AUDIT_ACTIONS:
        bad = True
    if m["action"] and not rtrim(m["action"]).isascii():
        raise Unsure("to_ascii_uppercase of non-ASCII")
    actor = rtrim(m["actor_id"])
    if actor and (len(actor) > 200 or has_cat(actor, "Cc")):
        bad = True
    start = end = None
    if m["start_time"] is not None:
        start = time_ok(m["start_time"])
        bad |= start is None
    if m["end_time"] is not None:
        end = time_ok(m["end_time"])
        bad |= end is None
    if start is not None and end is not None and start >= end:
        bad = True
    if bad:
        return INVALID
    for t in (start, end):
        if t is not None:
            storable(t)
    if m["page_token"]:
        token = decode_token(m["page_token"])
        if token is None:
            return INVALID
        if start is not None or end is not None:
            if re.fullmatch(r"[0-9a-f]{16}", token[1]):
                raise Unsure("fingerprint of these filters")
            return INVALID
        u = parse_uuid(key_id) if key_id else None
        parts = [
            f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}" if u else None,
            actor or None,
            rtrim(m["action"]).upper() if m["action"] else None,
            None,
            None,
        ]
        when, bar, ident = token[0].partition("|")
        if token[1] != fingerprint(parts) or not bar or not rfc3339_ok(when) or not parse_uuid(ident):
            return INVALID
    return OK


def sem_watch_audit(m):
    if m["cursor"] and m["start_time"] is not None:
        return INVALID
    if m["cursor"]:
        return OK if audit_cursor_ok(m["cursor"]) else INVALID
    if m["start_time"] is not None:
        at = time_ok(m["start_time"])
        if at is None:
            return INVALID
        storable(at)
    return OK


def sem_usage(m):
    if not parse_uuid(rtrim(m["id"])):
        return INVALID
    window = m["window"]
    if window is not None and not (3600 <= window["seconds"] <= 400 * 86_400 and window["nanos"] == 0):
        return INVALID
    return NOT_FOUND


def sem_report(m):
    if len(m["usages"]) > 1000:
        return INVALID
    for usage in m["usages"]:
        if not parse_uuid(rtrim(usage["key_id"])):
            return INVALID
        if usage["last_used_time"] is None or time_ok(usage["last_used_time"]) is None:
            return INVALID
        address = rtrim(usage["last_used_address"])
        if address and parse_ip(address) is None:
            return INVALID
        perms = usage["exercised_permissions"]
        if len(perms) > 256 or not all(is_permission_name(p) for p in perms):
            return INVALID
    return OK


def sem_update_policy(m):
    policy = m["policy"]
    if policy is None:
        return INVALID
    paths = m["update_mask"]["paths"] if m["update_mask"] is not None else []
    threshold, lifetime = (False, False) if paths else (True, policy["max_key_lifetime"] is not None)
    for path in paths:
        if path == "lockout_threshold":
            threshold = True
        elif path == "max_key_lifetime":
            lifetime = True
        elif path == "*":
            threshold = lifetime = True
        else:
            return INVALID
    if threshold and policy["lockout_threshold"] < 0:
        return INVALID
    new_max = None
    if lifetime and policy["max_key_lifetime"] is not None:
        d = policy["max_key_lifetime"]
        if d["seconds"] < 0 or d["nanos"] != 0 or 0 < d["seconds"] < 60:
            return INVALID
        new_max = d["seconds"] or None
    # The corpus may only ever write the defaults (lockout 100, no maximum lifetime): other cases
    # depend on them.
    if (threshold and policy["lockout_threshold"] != 100) or (lifetime and new_max is not None):
        raise SideEffect("UpdateOrgPolicy would change the org policy")
    return OK


def sem_watch_keys(m):
    if not m["cursor"]:
        return OK
    instance, dot, seq = m["cursor"].partition(".")
    if not dot or parse_uuid(instance) is None:
        return INVALID
    value = i64_parse(seq)
    return OK if value is not None and value >= 0 else INVALID


SEMANTICS = {
    "CreateApiKey": sem_create,
    "GetApiKey": sem_key_id_then_lookup(),
    "ListApiKeys": sem_list_keys,
    "UpdateApiKey": sem_update,
    "RegenerateApiKeySecret": sem_regenerate,
    "DeleteApiKey": sem_key_id_then_lookup(),
    "UndeleteApiKey": sem_key_id_then_lookup(),
    "Authenticate": sem_authenticate,
    "ListPermissions": lambda m: OK,
    "UnlockApiKey": sem_key_id_then_lookup(),
    "DisableApiKey": sem_key_id_then_lookup(),
    "EnableApiKey": sem_key_id_then_lookup(),
    "ListAuditEvents": sem_audit_list,
    "WatchAuditEvents": sem_watch_audit,
    "GetApiKeyUsage": sem_usage,
    "ReportKeyUsage": sem_report,
    "GetOrgPolicy": lambda m: OK,
    "UpdateOrgPolicy": sem_update_policy,
    "WatchKeyChanges": sem_watch_keys,
}


def oracle(method, auth, body):
    """The status the server answers, as a set of acceptable codes."""
    mtype, access = METHODS[method]
    if access != "public":
        if auth in ("none", "raw"):
            return {"UNAUTHENTICATED"}  # no credential, or one that is malformed or unknown
        if NEEDS[access] not in PRINCIPALS[auth]:
            return {"PERMISSION_DENIED"}
    if len(body) > MAX_REQUEST_BYTES:
        return {"OUT_OF_RANGE"}
    try:
        decoded = decode(mtype, body)
    except DecodeError:
        return INVALID
    return SEMANTICS[method](decoded)


# ------------------------------------------------------------------------------------------------
# The corpus
# ------------------------------------------------------------------------------------------------

rng = random.Random(SEED)
CASES = []
IDS = set()
UNSURE = []  # (case id, why the expectation may be off)
ID_RE = re.compile(r"[a-z][a-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)+")


def add(cid, method, body, auth="admin", expect=None, metadata=(), unsure=None):
    assert ID_RE.fullmatch(cid), cid
    assert cid not in IDS, cid
    assert method in METHODS, method
    assert auth in ("admin", "none", "reader", "reporter", "raw"), auth
    if auth == "raw":
        assert metadata is not None
    created_before = len(CREATED)
    try:
        got = oracle(method, auth, body)
    except Unsure as why:
        assert expect is not None, f"{cid}: the model is unsure ({why}); give an expectation"
        got = None
    if expect is None:
        expect = got
    else:
        expect = set(expect)
        assert got is None or got <= expect, f"{cid}: model says {sorted(got)}, expectation {sorted(expect)}"
    if len(CREATED) > created_before:
        assert "OK" in expect, cid
    assert expect and not expect & FORBIDDEN_CODES, cid
    for name, value in metadata:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) and not name.endswith("-bin"), name
        assert name in ("authorization", "x-request-id", "user-agent", "x-forwarded-for") or name.startswith("x-")
        assert all(b == 0x09 or 0x20 <= b <= 0x7E or b >= 0x80 for b in value), (cid, name)
        assert not value[:1].isspace() and not value[-1:].isspace(), (cid, name)
    if unsure:
        UNSURE.append((cid, unsure))
    IDS.add(cid)
    CASES.append(
        {
            "id": cid,
            "method": method,
            "auth": auth,
            "metadata": [[name, bytes(value).hex()] for name, value in metadata],
            "body": bytes(body).hex(),
            "expect": sorted(expect),
        }
    )


def probe(method, auth, body):
    """The model's answer, without recording keys it would create."""
    created = len(CREATED)
    try:
        return oracle(method, auth, body)
    except (Unsure, SideEffect):
        return None
    finally:
        del CREATED[created:]


def rid():
    """A random, syntactically valid UUID (v4) that names no key."""
    n = rng.getrandbits(128)
    n = (n & ~(0xF << 76)) | (0x4 << 76)
    n = (n & ~(0x3 << 62)) | (0x2 << 62)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def rbytes(n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def b64u(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jtoken(obj):
    return b64u(json.dumps(obj, separators=(",", ":")))


def make_token(key_id=None, secret=None, checksum_ok=True):
    key_bytes = bytes.fromhex((key_id or rid()).replace("-", ""))
    payload = key_bytes + (secret if secret is not None else rbytes(32))
    signed = "apk_" + b62_encode(payload, 65)
    crc = zlib.crc32(signed.encode()) & 0xFFFFFFFF
    if not checksum_ok:
        crc ^= 1
    return signed + b62_encode(crc.to_bytes(4, "big"), 6)


def make_secret():
    return b62_encode(rbytes(32), 43)


FUTURE = 4_102_444_800  # 2100-01-01
PAST = 946_684_800  # 2000-01-01
YEAR_10000 = 253_402_300_800  # 10000-01-01, valid for chrono, outside google.protobuf.Timestamp's range
I64_MAX, I64_MIN = (1 << 63) - 1, -(1 << 63)
I32_MAX, I32_MIN = (1 << 31) - 1, -(1 << 31)
K10 = 10_000
MB = 1 << 20

BAD_UUIDS = [
    ("empty", ""),
    ("spaces", "   "),
    ("word", "not-a-uuid"),
    ("short", "0f0e0d0c-0b0a-4908-8706-05040302010"),
    ("long", "0f0e0d0c-0b0a-4908-8706-0504030201000"),
    ("non-hex", "0f0e0d0c-0b0a-4908-8706-05040302010g"),
    ("misplaced-hyphens", "0f0e0d0c0-b0a-4908-8706-050403020100"),
    ("trailing-garbage", "0f0e0d0c-0b0a-4908-8706-050403020100x"),
    ("unbalanced-brace", "{0f0e0d0c-0b0a-4908-8706-050403020100"),
    ("bad-urn", "urn:uid:0f0e0d0c-0b0a-4908-8706-050403020100"),
    ("nul-inside", "0f0e0d0c-0b0a-4908-8706-0504030\x00100"),
    ("sql", "' OR '1'='1"),
    ("path", "../../../../etc/passwd"),
    ("arabic-digits", "\u0660" * 32),
    ("fullwidth", "\uff10" * 8 + "-" + "\uff10" * 4 + "-" + "\uff14" + "\uff10" * 3 + "-" + "\uff18" + "\uff10" * 3 + "-" + "\uff10" * 12),
    ("10k", "a" * K10),
    ("zero-width", "0f0e0d0c-0b0a-4908-8706-050403020100\u200b"),
]


def good_uuid_forms():
    u = rid()
    return [
        ("uppercase", u.upper()),
        ("simple", u.replace("-", "")),
        ("braced", "{" + u + "}"),
        ("urn", "urn:uuid:" + u),
        ("nil", "00000000-0000-0000-0000-000000000000"),
        ("max", "ffffffff-ffff-ffff-ffff-ffffffffffff"),
        ("padded", "  " + rid() + "\n\t"),
        ("ideographic-space", "\u3000" + rid() + "\u3000"),
    ]


# ------------------------------------------------------------------------------------------------
# 1. Every field of every RPC malformed, one at a time
# ------------------------------------------------------------------------------------------------

BAD_TIMESTAMPS = [
    ("negative-nanos", ts(FUTURE, -1)),
    ("nanos-1e9", ts(FUTURE, 1_000_000_000)),
    ("nanos-i32-max", ts(FUTURE, I32_MAX)),
    ("nanos-i32-min", ts(FUTURE, I32_MIN)),
    ("seconds-i64-max", ts(I64_MAX)),
    ("seconds-i64-min", ts(I64_MIN)),
    ("seconds-1e13", ts(10_000_000_000_000)),
    ("seconds-minus-1e13", ts(-10_000_000_000_000)),
]


def create_body(**over):
    fields = dict(display_name="Corpus probe", description="made by the corpus", permissions=["read_data"])
    fields.update(over)
    return enc("CreateApiKeyRequest", **fields)


BAD_NAMES = [
    ("empty", ""),
    ("blank", "   "),
    ("unicode-blank", "\u3000\u00a0\u2003"),
    ("101-chars", "n" * 101),
    ("10k-chars", "n" * K10),
    ("101-accented", "\u00e9" * 101),
    ("101-decomposed", "e\u0301" * 101),
    ("101-emoji", "\U0001f600" * 101),
    ("101-combining-marks", "\u0301" * 101),
    ("bell", "bot\x07"),
    ("newline", "line\nbreak"),
    ("nul", "nul\x00byte"),
    ("delete-char", "del\x7fete"),
    ("ansi-escape", "\x1b[31mred\x1b[0m"),
    ("next-line-c1", "a\u0085b"),
    ("right-to-left-override", "admin\u202ebot"),
    ("zero-width-space", "admin\u200bbot"),
    ("zero-width-joiner", "admin\u200dbot"),
    ("byte-order-mark", "\ufeffadmin"),
    ("soft-hyphen", "ad\u00admin"),
    ("left-to-right-isolate", "\u2066admin\u2069"),
    ("arabic-letter-mark", "admin\u061c"),
    ("language-tag", "admin\U000e0001"),
]

BAD_CIDRS = [
    ("host-bits-v4", "10.0.0.1/8"),
    ("garbage", "garbage"),
    ("prefix-33", "10.0.0.0/33"),
    ("prefix-leading-zero", "10.0.0.0/08"),
    ("prefix-negative", "10.0.0.0/-1"),
    ("prefix-plus", "10.0.0.0/+8"),
    ("prefix-empty", "10.0.0.0/"),
    ("prefix-space", "10.0.0.0/ 8"),
    ("prefix-huge", "10.0.0.0/4294967304"),
    ("no-address", "/8"),
    ("double-prefix", "10.0.0.0/8/8"),
    ("host-bits-v6", "2001:db8::1/32"),
    ("prefix-129", "2001:db8::/129"),
    ("mapped-v4-wide-prefix", "::ffff:10.0.0.0/104"),
    ("zone-id", "fe80::1%eth0/64"),
    ("brackets", "[::1]/128"),
    ("octal-octet", "010.0.0.0/8"),
    ("five-octets", "1.2.3.4.5"),
    ("octet-256", "256.0.0.0/8"),
    ("three-octets", "1.2.3/24"),
    ("empty", ""),
    ("nul", "10.0.0.0/8\x00"),
    ("hostname", "localhost"),
]

BAD_RATE_LIMITS = [
    ("empty", {}),
    ("requests-zero", {"requests": 0, "window": dur(60)}),
    ("requests-negative", {"requests": -1, "window": dur(60)}),
    ("requests-over-1e9", {"requests": 1_000_000_001, "window": dur(60)}),
    ("requests-i64-max", {"requests": I64_MAX, "window": dur(60)}),
    ("requests-i64-min", {"requests": I64_MIN, "window": dur(60)}),
    ("window-missing", {"requests": 10}),
    ("window-zero", {"requests": 10, "window": dur(0)}),
    ("window-negative", {"requests": 10, "window": dur(-1)}),
    ("window-negative-nanos", {"requests": 10, "window": dur(1, -5)}),
    ("window-over-a-day", {"requests": 10, "window": dur(86_401)}),
    ("window-a-day-and-a-nano", {"requests": 10, "window": dur(86_400, 1)}),
    ("window-under-a-second", {"requests": 10, "window": dur(0, 999_999_999)}),
    ("window-i64-max", {"requests": 10, "window": dur(I64_MAX)}),
]


def fields_create():
    m = "CreateApiKey"
    for name, value in BAD_NAMES:
        add(f"fields/{m}/display_name/{name}", m, create_body(display_name=value))
    add(f"fields/{m}/display_name/100k-chars", m, create_body(display_name="n" * 100_000), expect=OVERSIZE,
        unsure="over transport.max_request_bytes (64 KiB): tonic answers OUT_OF_RANGE, gRPC's spec says "
               "RESOURCE_EXHAUSTED")
    add(f"fields/{m}/display_name/128kb", m, create_body(display_name="n" * (MB // 8)), expect=OVERSIZE)
    add(f"fields/{m}/display_name/80kb-unauthenticated", m, create_body(display_name="n" * (80 * 1024)), auth="none")
    # Names of the bootstrap key, which the corpus cannot create again (unique ignoring case).
    for name, value in [("bootstrap-name", "Administrator"), ("bootstrap-name-upper", "ADMINISTRATOR"),
                        ("bootstrap-name-padded", "  administrator\t"), ("bootstrap-name-long-s", "Adminiſtrator")]:
        add(f"fields/{m}/display_name/{name}", m, create_body(display_name=value),
            unsure="ALREADY_EXISTS only while the bootstrap key 'Administrator' keeps its name and is not deleted")
    for name, value in [("1001-chars", "d" * 1001), ("10k-chars", "d" * K10), ("1001-accented", "\u00e9" * 1001),
                        ("nul", "a\x00b"), ("escape", "\x1b]0;title\x07"), ("delete-char", "\x7f"),
                        ("next-line-c1", "\u0085"), ("vertical-tab", "a\x0bb"), ("form-feed", "a\x0cb")]:
        add(f"fields/{m}/description/{name}", m, create_body(description=value))
    for name, value in [("unknown", ["not_a_permission"]), ("uppercase", ["READ_DATA"]), ("leading-space", [" read_data"]),
                        ("trailing-space", ["read_data "]), ("empty-name", [""]), ("one-bad-of-two", ["read_data", "bogus"]),
                        ("wildcard", ["*"]), ("glob", ["read_*"]), ("nul-suffix", ["api_keys_admin\x00"]),
                        ("65-chars", ["a" * 65]), ("homoglyph", ["read_dat\u0430"])]:
        add(f"fields/{m}/permissions/{name}", m, create_body(permissions=value))
    for name, value in [("101-chars", "a" * 101), ("10k-chars", "a" * K10), ("nul", "app\x00"), ("newline", "my\napp"),
                        ("right-to-left-override", "app\u202e"), ("zero-width-space", "app\u200b"), ("escape", "\x1bapp")]:
        add(f"fields/{m}/app_id/{name}", m, create_body(app_id=value))
    for name, value in BAD_TIMESTAMPS:
        add(f"fields/{m}/expire_time/{name}", m, create_body(expire_time=value))
    add(f"fields/{m}/expire_time/past", m, create_body(expire_time=ts(PAST)))
    add(f"fields/{m}/expire_time/epoch-empty-message", m, create_body(expire_time=b""))
    add(f"fields/{m}/expire_time/year-0", m, create_body(expire_time=ts(-62_167_219_200)))
    for name, value in BAD_CIDRS:
        add(f"fields/{m}/allowed_cidrs/{name}", m, create_body(allowed_cidrs=[value]))
    add(f"fields/{m}/allowed_cidrs/101-networks", m, create_body(allowed_cidrs=["10.0.0.0/8"] * 101))
    add(f"fields/{m}/allowed_cidrs/10k-networks", m, create_body(allowed_cidrs=["::"] * K10))
    add(f"fields/{m}/allowed_cidrs/one-bad-of-three", m, create_body(allowed_cidrs=["10.0.0.0/8", "nope", "::/0"]))
    for name, value in BAD_RATE_LIMITS:
        add(f"fields/{m}/rate_limit/{name}", m, create_body(rate_limit=value))
    add(f"fields/{m}/all-fields-bad", m, create_body(display_name="", description="\x00", permissions=["x"],
                                                      app_id="\x00", expire_time=ts(0, -1), allowed_cidrs=["x"],
                                                      rate_limit={}))
    add(f"fields/{m}/empty-request", m, b"")
    # Boundaries that are valid: these create keys (ALREADY_EXISTS when the corpus runs again).
    add(f"fields/{m}/boundary/name-100-chars-padded", m,
        create_body(display_name="  Corpus boundary 100 " + "n" * 80 + "  ", description="d" * 1000))
    add(f"fields/{m}/boundary/name-100-after-nfc", m, create_body(display_name="Corpus NFC " + "e\u0301" * 89))
    add(f"fields/{m}/boundary/100-networks-and-limits", m, create_body(
        display_name="Corpus boundary networks", allowed_cidrs=[f"10.{i}.0.0/16" for i in range(100)],
        rate_limit={"requests": 1_000_000_000, "window": dur(86_400)}, expire_time=ts(FUTURE, 999_999_999)))
    for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"), ("reporter", "PERMISSION_DENIED")):
        add(f"fields/{m}/auth-{auth}/valid-body", m, create_body(display_name="Corpus never created"), auth=auth,
            expect=[code])
        add(f"fields/{m}/auth-{auth}/bad-body", m, create_body(display_name=""), auth=auth, expect=[code])


def id_cases(m, mtype, field="id", extra=None, auths=True, good=True):
    extra = extra or {}
    for name, value in BAD_UUIDS:
        add(f"fields/{m}/{field}/{name}", m, enc(mtype, **{field: value}, **extra))
    if good:
        for name, value in good_uuid_forms():
            add(f"fields/{m}/{field}/valid-{name}", m, enc(mtype, **{field: value}, **extra))
    if auths:
        for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"),
                           ("reporter", "PERMISSION_DENIED")):
            add(f"fields/{m}/auth-{auth}/random-id", m, enc(mtype, **{field: rid()}, **extra), auth=auth, expect=[code])
            add(f"fields/{m}/auth-{auth}/bad-id", m, enc(mtype, **{field: "x"}, **extra), auth=auth, expect=[code])


BAD_ETAGS = [
    ("garbage", "garbage"),
    ("weak", 'W/"1"'),
    ("unquoted", "1"),
    ("negative", '"-1"'),
    ("huge-number", '"' + "9" * 40 + '"'),
    ("10k", "e" * K10),
    ("control", '"1"\x00'),
    ("unicode", '"\u00bd"'),
]


def etag_cases(m, mtype, picks=None):
    """Etags are only compared with the key's, after the lookup: any text is NOT_FOUND for an unknown key."""
    for name, value in picks if picks is not None else BAD_ETAGS:
        add(f"fields/{m}/etag/{name}-unknown-key", m, enc(mtype, id=rid(), etag=value))
    add(f"fields/{m}/etag/garbage-bad-id", m, enc(mtype, id="nope", etag="garbage"))


def fields_simple_id_rpcs():
    id_cases("GetApiKey", "GetApiKeyRequest")
    etag_like = [("DeleteApiKey", "DeleteApiKeyRequest", True), ("UndeleteApiKey", "UndeleteApiKeyRequest", False),
                 ("UnlockApiKey", "UnlockApiKeyRequest", False), ("DisableApiKey", "DisableApiKeyRequest", True),
                 ("EnableApiKey", "EnableApiKeyRequest", False)]
    bad = BAD_UUIDS[:8] + BAD_UUIDS[11:13] + BAD_UUIDS[15:]
    good = good_uuid_forms()
    for i, (m, mtype, ack) in enumerate(etag_like):
        # Each RPC gets its own share of the malformed and the unusual-but-valid IDs.
        for name, value in [bad[0]] + bad[1 + i::len(etag_like)]:
            add(f"fields/{m}/id/{name}", m, enc(mtype, id=value))
        for name, value in good[i::len(etag_like)]:
            add(f"fields/{m}/id/valid-{name}", m, enc(mtype, id=value))
        for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"),
                           ("reporter", "PERMISSION_DENIED")):
            add(f"fields/{m}/auth-{auth}/random-id", m, enc(mtype, id=rid()), auth=auth, expect=[code])
        etag_cases(m, mtype, BAD_ETAGS[i::len(etag_like)])
        if ack:
            add(f"fields/{m}/acknowledge_app_impact/varint-max", m,
                enc(mtype, id=rid(), acknowledge_app_impact=(1 << 64) - 1))


def fields_list_keys():
    m, t = "ListApiKeys", "ListApiKeysRequest"
    for name, value in [("minus-1", -1), ("minus-1000", -1000), ("i32-min", I32_MIN)]:
        add(f"fields/{m}/page_size/{name}", m, enc(t, page_size=value))
    # int32 on the wire is a varint that prost truncates to 32 bits.
    add(f"fields/{m}/page_size/varint-2pow31-is-i32-min", m, f_varint(1, 1 << 31))
    add(f"fields/{m}/page_size/varint-2pow32-minus-1-is-minus-1", m, f_varint(1, (1 << 32) - 1))
    add(f"fields/{m}/page_size/varint-2pow32-is-0", m, f_varint(1, 1 << 32))
    add(f"fields/{m}/page_size/varint-u64-max-is-minus-1", m, f_varint(1, (1 << 64) - 1))
    add(f"fields/{m}/page_size/i32-max-clamped", m, enc(t, page_size=I32_MAX))
    add(f"fields/{m}/page_size/one-million-clamped", m, enc(t, page_size=1_000_000))
    for name, value in [("random-base64", b64u(rbytes(48))), ("truncated", jtoken({"k": "a", "f": FP_KEYS})[:-7]),
                        ("not-base64", "!!!not base64!!!"), ("padded", b64u(b"{}") + "=="),
                        ("standard-alphabet", base64.b64encode(b"\xfb\xff\xbf" * 10).decode()),
                        ("3000-chars", "A" * 3000), ("2049-chars", "A" * 2049), ("one-char", "A"),
                        ("whitespace", "   "), ("nul", "\x00"), ("10k", "QUFB" * 2500),
                        ("non-canonical-trailing-bits", "QUFBQR"), ("unicode", "\u00e9\u00e9\u00e9\u00e9")]:
        add(f"fields/{m}/page_token/{name}", m, enc(t, page_token=value))
    for name, value in [("101-chars", "c" * 101), ("10k", "c" * K10), ("nul", "a\x00"), ("newline", "a\nb"),
                        ("escape", "\x1b[2J"), ("next-line-c1", "\u0085")]:
        add(f"fields/{m}/name_contains/{name}", m, enc(t, name_contains=value))
    for name, value in [("sql", "%' OR 1=1 --"), ("like-wildcards", "%_%"), ("right-to-left-override", "\u202e"),
                        ("100-chars", "c" * 100), ("padded-blank", "   ")]:
        add(f"fields/{m}/name_contains/hostile-but-valid-{name}", m, enc(t, name_contains=value))
    for name, value in [("nul", "app\x00"), ("newline", "a\nb"), ("tab", "a\tb")]:
        add(f"fields/{m}/app_id/{name}", m, enc(t, app_id=value))
    add(f"fields/{m}/app_id/hostile-but-valid-10k", m, enc(t, app_id="a" * K10))
    for name, value in [("unknown", "bogus"), ("uppercase", "READ_DATA"), ("wildcard", "*"),
                        ("nul", "read_data\x00")]:
        add(f"fields/{m}/permission/{name}", m, enc(t, permission=value))
    add(f"fields/{m}/permission/valid-padded", m, enc(t, permission="  read_data \n"))
    for name, value in [("999", 999), ("minus-1", -1), ("6", 6), ("i32-max", I32_MAX), ("i32-min", I32_MIN)]:
        add(f"fields/{m}/state/{name}", m, enc(t, state=value))
    add(f"fields/{m}/state/valid-deleted", m, enc(t, state=5))
    for name, value in BAD_TIMESTAMPS:
        add(f"fields/{m}/expiring_before/{name}", m, enc(t, expiring_before=value))
    add(f"fields/{m}/expiring_before/valid-epoch", m, enc(t, expiring_before=b""))
    # Outside google.protobuf.Timestamp's range (years 1 to 9999): convert::time refuses it.
    add(f"fields/{m}/expiring_before/year-10000", m, enc(t, expiring_before=ts(YEAR_10000)))
    add(f"fields/{m}/show_deleted/varint-2", m, enc(t, show_deleted=2))
    add(f"fields/{m}/show_deleted/varint-u64-max", m, enc(t, show_deleted=(1 << 64) - 1))
    add(f"fields/{m}/several-bad-filters", m, enc(t, page_size=-5, permission="nope", state=77, name_contains="\x00"))
    for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"), ("reporter", "PERMISSION_DENIED")):
        add(f"fields/{m}/auth-{auth}/valid", m, b"", auth=auth, expect=[code])
        add(f"fields/{m}/auth-{auth}/bad-page-size", m, enc(t, page_size=-1), auth=auth, expect=[code])


def update_body(api_key=None, mask=None, **rest):
    return enc("UpdateApiKeyRequest", api_key=api_key, update_mask=mask, **rest)


def fields_update():
    m = "UpdateApiKey"
    add(f"fields/{m}/api_key/missing", m, update_body(mask=fmask("display_name")))
    add(f"fields/{m}/api_key/missing-no-mask", m, b"")
    for name, value in BAD_UUIDS[:9] + BAD_UUIDS[11:12]:
        add(f"fields/{m}/api_key.id/{name}", m,
            update_body({"id": value, "display_name": "Corpus renamed"}, fmask("display_name")))
    for name, value in good_uuid_forms()[:4]:
        add(f"fields/{m}/api_key.id/valid-{name}", m,
            update_body({"id": value, "display_name": "Corpus renamed"}, fmask("display_name")))
    named = {"display_name": "Corpus renamed"}
    for name, paths in [("unknown", ["foo"]), ("id", ["id"]), ("app_id", ["app_id"]), ("state", ["state"]),
                        ("etag", ["etag"]), ("org_id", ["org_id"]), ("create_time", ["create_time"]),
                        ("failed_attempts", ["failed_attempts"]), ("prefixed", ["api_key.display_name"]),
                        ("camel-case", ["displayName"]), ("wrong-case", ["Display_Name"]),
                        ("trailing-space", ["display_name "]), ("empty-path", [""]),
                        ("valid-then-unknown", ["display_name", "nope"]), ("star-and-unknown", ["*", "bogus"]),
                        ("nested-rate-limit-path", ["rate_limit.requests"]), ("wildcard-suffix", ["display_*"]),
                        ("10k-paths", ["x"] * K10), ("nul", ["display_name\x00"])]:
        add(f"fields/{m}/update_mask/{name}", m, update_body({"id": rid(), **named}, fmask(*paths)))
    add(f"fields/{m}/update_mask/duplicates", m,
        update_body({"id": rid(), **named}, fmask("display_name", "display_name", "display_name")))
    add(f"fields/{m}/update_mask/star-with-name-only", m, update_body({"id": rid(), **named}, fmask("*")))
    add(f"fields/{m}/update_mask/star-without-name", m, update_body({"id": rid()}, fmask("*")))
    add(f"fields/{m}/update_mask/empty-mask-nothing-set", m, update_body({"id": rid()}, b""))
    add(f"fields/{m}/update_mask/absent-nothing-set", m, update_body({"id": rid()}))
    add(f"fields/{m}/update_mask/absent-only-output-fields-set", m,
        update_body({"id": rid(), "etag": '"1"', "state": 3, "org_id": rid(), "app_id": "x"}))
    add(f"fields/{m}/update_mask/empty-mask-with-name", m, update_body({"id": rid(), **named}, b""))
    for name, value in BAD_NAMES[:4] + BAD_NAMES[9:12] + BAD_NAMES[15:17]:
        add(f"fields/{m}/api_key.display_name/{name}", m,
            update_body({"id": rid(), "display_name": value}, fmask("display_name")))
    add(f"fields/{m}/api_key.display_name/bad-but-not-in-mask", m,
        update_body({"id": rid(), "display_name": "\x00", "description": "fine"}, fmask("description")))
    add(f"fields/{m}/api_key.display_name/bad-no-mask", m, update_body({"id": rid(), "display_name": "\x07"}))
    for name, value in [("1001-chars", "d" * 1001), ("nul", "\x00"), ("escape", "\x1b")]:
        add(f"fields/{m}/api_key.description/{name}", m,
            update_body({"id": rid(), "description": value}, fmask("description")))
    for name, value in [("unknown", ["bogus"]), ("uppercase", ["READ_DATA"])]:
        add(f"fields/{m}/api_key.permissions/{name}", m,
            update_body({"id": rid(), "permissions": value}, fmask("permissions")))
    add(f"fields/{m}/api_key.permissions/cleared", m, update_body({"id": rid()}, fmask("permissions")))
    for name, value in BAD_TIMESTAMPS[:6]:
        add(f"fields/{m}/api_key.expire_time/{name}", m,
            update_body({"id": rid(), "expire_time": value}, fmask("expire_time")))
    add(f"fields/{m}/api_key.expire_time/past", m, update_body({"id": rid(), "expire_time": ts(PAST)}, fmask("expire_time")))
    add(f"fields/{m}/api_key.expire_time/removed", m, update_body({"id": rid()}, fmask("expire_time")),
        unsure="NOT_FOUND assumes the org policy sets no maximum key lifetime (else removing an expiry is "
               "INVALID_ARGUMENT, checked before the lookup)")
    add(f"fields/{m}/api_key.expire_time/year-10000", m,
        update_body({"id": rid(), "expire_time": ts(YEAR_10000)}, fmask("expire_time")))
    for name, value in BAD_CIDRS[:6] + BAD_CIDRS[11:15]:
        add(f"fields/{m}/api_key.allowed_cidrs/{name}", m,
            update_body({"id": rid(), "allowed_cidrs": [value]}, fmask("allowed_cidrs")))
    add(f"fields/{m}/api_key.allowed_cidrs/101-networks", m,
        update_body({"id": rid(), "allowed_cidrs": ["::/0"] * 101}, fmask("allowed_cidrs")))
    for name, value in BAD_RATE_LIMITS[:3] + BAD_RATE_LIMITS[6:8] + BAD_RATE_LIMITS[10:13]:
        add(f"fields/{m}/api_key.rate_limit/{name}", m,
            update_body({"id": rid(), "rate_limit": value}, fmask("rate_limit")))
    add(f"fields/{m}/api_key.rate_limit/window-nanos-1e9", m,
        update_body({"id": rid(), "rate_limit": {"requests": 5, "window": dur(0, 1_000_000_000)}}, fmask("rate_limit")))
    add(f"fields/{m}/api_key.rate_limit/removed", m, update_body({"id": rid()}, fmask("rate_limit")))
    # Output-only fields are ignored, however malformed.
    add(f"fields/{m}/output-only/malformed-and-ignored", m, update_body(
        {"id": rid(), "display_name": "Corpus renamed", "org_id": "not-a-uuid", "state": 999, "failed_attempts": -1,
         "create_time": ts(0, -1), "delete_time": ts(I64_MAX), "etag": "\x00", "last_used_address": "nope",
         "created_by": {"type": 99, "id": "\x00"}}, fmask("display_name")))
    for name, value in BAD_ETAGS[:6]:
        add(f"fields/{m}/etag/{name}-unknown-key", m,
            update_body({"id": rid(), **named}, fmask("display_name"), etag=value))
    add(f"fields/{m}/acknowledge_app_impact/varint-2", m,
        update_body({"id": rid(), **named}, fmask("display_name"), acknowledge_app_impact=2))
    for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"), ("reporter", "PERMISSION_DENIED")):
        add(f"fields/{m}/auth-{auth}/valid", m, update_body({"id": rid(), **named}, fmask("display_name")), auth=auth,
            expect=[code])
        add(f"fields/{m}/auth-{auth}/bad", m, update_body(None, fmask("nope")), auth=auth, expect=[code])


def fields_regenerate():
    m, t = "RegenerateApiKeySecret", "RegenerateApiKeySecretRequest"
    for name, value in BAD_UUIDS[:8] + BAD_UUIDS[11:12] + BAD_UUIDS[15:16]:
        add(f"fields/{m}/id/{name}", m, enc(t, id=value))
    for name, value in good_uuid_forms()[:3]:
        add(f"fields/{m}/id/valid-{name}", m, enc(t, id=value))
    for name, value in [("negative-seconds", dur(-1)), ("negative-nanos", dur(0, -1)), ("7-days-and-a-second", dur(604_801)),
                        ("i64-max", dur(I64_MAX)), ("i64-min", dur(I64_MIN)), ("minus-7-days", dur(-604_800))]:
        add(f"fields/{m}/previous_secret_ttl/{name}", m, enc(t, id=rid(), previous_secret_ttl=value))
        add(f"fields/{m}/previous_secret_ttl/{name}-bad-id", m, enc(t, id="bad", previous_secret_ttl=value))
    add(f"fields/{m}/previous_secret_ttl/valid-7-days", m, enc(t, id=rid(), previous_secret_ttl=dur(604_800)))
    add(f"fields/{m}/previous_secret_ttl/valid-zero", m, enc(t, id=rid(), previous_secret_ttl=b""))
    add(f"fields/{m}/previous_secret_ttl/valid-ttl-bad-id", m, enc(t, id="bad", previous_secret_ttl=dur(60)))
    add(f"fields/{m}/previous_secret_ttl/7-days-plus-nanos", m,
        enc(t, id=rid(), previous_secret_ttl=dur(604_800, 999_999_999)))
    add(f"fields/{m}/previous_secret_ttl/nanos-2e9", m,
        enc(t, id=rid(), previous_secret_ttl=dur(0, 2_000_000_000)))
    etag_cases(m, t)
    add(f"fields/{m}/acknowledge_app_impact/varint-2", m, enc(t, id=rid(), acknowledge_app_impact=2))
    for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"), ("reporter", "PERMISSION_DENIED")):
        add(f"fields/{m}/auth-{auth}/random-id", m, enc(t, id=rid()), auth=auth, expect=[code])
        add(f"fields/{m}/auth-{auth}/bad-ttl", m, enc(t, id=rid(), previous_secret_ttl=dur(-1)), auth=auth,
            expect=[code])


def auth_body(**fields):
    return enc("AuthenticateRequest", **fields)


def fields_authenticate():
    m = "Authenticate"
    tok = make_token()
    add(f"fields/{m}/credential/neither", m, b"")
    add(f"fields/{m}/credential/neither-with-permissions", m, auth_body(required_permissions=["read_data"]))
    add(f"fields/{m}/credential/both", m, auth_body(key_id=rid(), secret=make_secret(), token=make_token()))
    add(f"fields/{m}/credential/token-and-key-id", m, auth_body(key_id=rid(), token=make_token()))
    add(f"fields/{m}/credential/token-and-secret", m, auth_body(secret=make_secret(), token=make_token()))
    add(f"fields/{m}/credential/garbage-token-and-garbage-key-id", m, auth_body(key_id="x", token="y"))
    for name, value in [("prefix-only", "apk_"), ("garbage", "apk_" + "%" * 20), ("74-chars", tok[:-1]),
                        ("76-chars", tok + "0"), ("bad-checksum", make_token(checksum_ok=False)),
                        ("uppercase-prefix", "APK_" + tok[4:]), ("wrong-prefix", "apx_" + tok[4:]),
                        ("non-base62-75-chars", "apk_" + "!" * 71), ("10k", "apk_" + "A" * K10),
                        ("blank", "   "), ("tab", "\t"), ("nul", tok[:-1] + "\x00"),
                        ("body-overflows-48-bytes", (lambda s: s + b62_encode((zlib.crc32(s.encode()) & 0xFFFFFFFF).to_bytes(4, "big"), 6))("apk_" + "z" * 65)),
                        ("multibyte-75-bytes", "apk_" + "\u00e9" * 35 + "A"), ("bearer-prefixed", "Bearer " + tok),
                        ("basic-style", base64.b64encode(f"{rid()}:{make_secret()}".encode()).decode())]:
        add(f"fields/{m}/token/{name}", m, auth_body(token=value))
    add(f"fields/{m}/token/128kb", m, auth_body(token="apk_" + "A" * (MB // 8)), auth="none", expect=OVERSIZE)
    # Well-formed credentials of keys that do not exist: looked up, then refused like a wrong secret.
    # (Each one spends the caller's failure budget: 100 per second, bursts of 200, then RESOURCE_EXHAUSTED.)
    add(f"fields/{m}/token/well-formed-unknown", m, auth_body(token=make_token()))
    add(f"fields/{m}/token/well-formed-unknown-padded", m, auth_body(token="  " + make_token() + "\n"))
    add(f"fields/{m}/key_id/well-formed-unknown", m, auth_body(key_id=rid(), secret=make_secret()))
    for name, value in [("word", "not-a-uuid"), ("empty-with-secret", ""), ("10k", "k" * K10), ("nul", rid()[:-1] + "\x00")]:
        add(f"fields/{m}/key_id/{name}", m, auth_body(key_id=value, secret=make_secret()))
    add(f"fields/{m}/key_id/alone", m, auth_body(key_id=rid()))
    for name, value in [("short", "abc"), ("44-chars", make_secret() + "0"), ("non-base62", "!" * 43),
                        ("overflows-32-bytes", "z" * 43), ("10k", "s" * K10), ("blank", "   ")]:
        add(f"fields/{m}/secret/{name}", m, auth_body(key_id=rid(), secret=value))
    add(f"fields/{m}/secret/alone", m, auth_body(secret=make_secret()))
    for name, value in [("257-valid-names", ["read_data"] * 257), ("10k", ["a"] * K10), ("uppercase", ["READ_DATA"]),
                        ("empty-name", [""]), ("starts-with-digit", ["1read"]), ("65-chars", ["a" * 65]),
                        ("space", ["read data"]), ("nul", ["read_data\x00"]), ("non-ascii", ["r\u00e9ad"]),
                        ("one-bad-of-three", ["read_data", "edit_data", "Bad"]), ("slash", ["a/b"])]:
        add(f"fields/{m}/required_permissions/{name}", m, auth_body(token="apk_bad", required_permissions=value))
    # Syntax is checked, not the catalog: these reach the credential check.
    add(f"fields/{m}/required_permissions/256-names-boundary", m,
        auth_body(token="apk_bad", required_permissions=[f"p{i}" for i in range(256)]))
    add(f"fields/{m}/required_permissions/not-in-catalog-but-well-formed", m,
        auth_body(token="apk_bad", required_permissions=["no_such_permission:x.y-z"]))
    for name, value in [("word", "not-an-ip"), ("with-port", "1.2.3.4:80"), ("brackets", "[::1]"), ("zone", "fe80::1%lo"),
                        ("octet-256", "1.2.3.256"), ("leading-zero", "01.2.3.4"), ("cidr", "10.0.0.0/8"),
                        ("10k", "1" * K10), ("hostname", "localhost"), ("two-addresses", "1.2.3.4, 5.6.7.8"),
                        ("nul", "1.2.3.4\x00"), ("hex-v4", "0x7f.0.0.1")]:
        add(f"fields/{m}/client_address/{name}", m, auth_body(token="apk_bad", client_address=value))
        if name in ("word", "with-port"):
            add(f"fields/{m}/client_address/{name}-with-well-formed-token", m,
                auth_body(token=make_token(), client_address=value))
    for name, value in [("padded-v4", "  1.2.3.4  "), ("mapped-v6", "::ffff:1.2.3.4"), ("v6", "2001:db8::1")]:
        add(f"fields/{m}/client_address/valid-{name}", m, auth_body(token="apk_bad", client_address=value))
    add(f"fields/{m}/caller_enforces_restrictions/varint-7", m, auth_body(token="apk_bad", caller_enforces_restrictions=7))
    for auth in ("none", "reader", "reporter"):
        add(f"fields/{m}/auth-{auth}/neither", m, b"", auth=auth)
        add(f"fields/{m}/auth-{auth}/bad-token", m, auth_body(token="apk_bad"), auth=auth)


def fields_list_permissions():
    m = "ListPermissions"
    add(f"fields/{m}/empty", m, b"")
    for auth in ("none", "reader", "reporter"):
        add(f"fields/{m}/auth-{auth}/empty", m, b"", auth=auth)
    add(f"fields/{m}/unknown-fields/all-wire-types", m,
        f_varint(1, 5) + f_fixed64(2, 7) + f_str(3, "x") + f_group(4, f_varint(1, 1)) + f_fixed32(5, 9), auth="none")
    add(f"fields/{m}/unknown-fields/max-field-number", m, f_varint((1 << 29) - 1, 1), auth="none")
    add(f"fields/{m}/unknown-fields/50k-of-them", m, f_str(7, "u" * 50_000), auth="none")


def fields_audit_list():
    m, t = "ListAuditEvents", "ListAuditEventsRequest"
    for name, value in [("minus-1", -1), ("i32-min", I32_MIN)]:
        add(f"fields/{m}/page_size/{name}", m, enc(t, page_size=value))
    add(f"fields/{m}/page_size/varint-2pow32-minus-1-is-minus-1", m, f_varint(1, (1 << 32) - 1))
    add(f"fields/{m}/page_size/i32-max-clamped", m, enc(t, page_size=I32_MAX))
    for name, value in [("random-base64", b64u(rbytes(40))), ("not-base64", "%%%"), ("3000-chars", "A" * 3000),
                        ("padded", b64u(b'{"k":"a"}') + "="), ("whitespace", " "), ("10k", "QUFB" * 2500)]:
        add(f"fields/{m}/page_token/{name}", m, enc(t, page_token=value))
    for name, value in BAD_UUIDS[2:9] + BAD_UUIDS[11:13]:
        add(f"fields/{m}/key_id/{name}", m, enc(t, key_id=value))
    add(f"fields/{m}/key_id/blank-ignored", m, enc(t, key_id="   "))
    add(f"fields/{m}/key_id/valid-unknown", m, enc(t, key_id=rid()))
    for name, value in [("201-chars", "a" * 201), ("10k", "a" * K10), ("nul", "bootstrap\x00"), ("newline", "a\nb")]:
        add(f"fields/{m}/actor_id/{name}", m, enc(t, actor_id=value))
    add(f"fields/{m}/actor_id/valid-200-chars", m, enc(t, actor_id="a" * 200))
    add(f"fields/{m}/actor_id/valid-sql", m, enc(t, actor_id="x' OR '1'='1"))
    for name, value in [("unknown", "bogus"), ("blank", "   "), ("two", "CREATE,DELETE"), ("sql", "CREATE' OR 1=1 --"),
                        ("10k", "A" * K10), ("nul", "CREATE\x00"), ("prefix", "CREAT"), ("underscore-less", "REGENERATESECRET")]:
        add(f"fields/{m}/action/{name}", m, enc(t, action=value))
    for name, value in [("lowercase", "create"), ("padded", "  DELETE\t")]:
        add(f"fields/{m}/action/valid-{name}", m, enc(t, action=value))
    for name, value in BAD_TIMESTAMPS[:6]:
        add(f"fields/{m}/start_time/{name}", m, enc(t, start_time=value))
        add(f"fields/{m}/end_time/{name}", m, enc(t, end_time=value))
    add(f"fields/{m}/time-range/start-after-end", m, enc(t, start_time=ts(FUTURE), end_time=ts(PAST)))
    add(f"fields/{m}/time-range/start-equals-end", m, enc(t, start_time=ts(PAST, 5), end_time=ts(PAST, 5)))
    add(f"fields/{m}/time-range/valid", m, enc(t, start_time=ts(PAST), end_time=ts(FUTURE)))
    for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"), ("reporter", "PERMISSION_DENIED")):
        add(f"fields/{m}/auth-{auth}/valid", m, b"", auth=auth, expect=[code])
        add(f"fields/{m}/auth-{auth}/bad-action", m, enc(t, action="nope"), auth=auth, expect=[code])


def audit_cursor(when="2024-01-01T00:00:00.000000000Z", ident=None):
    return b64u(f"{when}|{ident or rid()}")


def fields_watch_audit():
    m, t = "WatchAuditEvents", "WatchAuditEventsRequest"
    add(f"fields/{m}/empty-starts-now", m, b"")
    for name, value in [("garbage", "garbage!"), ("random-base64", b64u(rbytes(30))), ("no-bar", b64u("2024-01-01T00:00:00Z")),
                        ("bad-time", audit_cursor(when="yesterday")), ("bad-id", b64u("2024-01-01T00:00:00Z|nope")),
                        ("padded", audit_cursor() + "="), ("standard-alphabet", base64.b64encode(b"\xfb\xff" * 9).decode()),
                        ("invalid-utf8", b64u(b"\xff\xfe|x")), ("10k", "A" * K10), ("month-13", audit_cursor(when="2024-13-01T00:00:00Z"))]:
        add(f"fields/{m}/cursor/{name}", m, enc(t, cursor=value))
    add(f"fields/{m}/cursor/valid", m, enc(t, cursor=audit_cursor()))
    for name, value in BAD_TIMESTAMPS[:6]:
        add(f"fields/{m}/start_time/{name}", m, enc(t, start_time=value))
    add(f"fields/{m}/start_time/valid-epoch", m, enc(t, start_time=b""))
    add(f"fields/{m}/start_time/valid-future", m, enc(t, start_time=ts(FUTURE)))
    for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"), ("reporter", "PERMISSION_DENIED")):
        add(f"fields/{m}/auth-{auth}/valid", m, b"", auth=auth, expect=[code])
        add(f"fields/{m}/auth-{auth}/bad-cursor", m, enc(t, cursor="x"), auth=auth, expect=[code])


def fields_usage():
    m, t = "GetApiKeyUsage", "GetApiKeyUsageRequest"
    for name, value in BAD_UUIDS[:8] + BAD_UUIDS[11:12]:
        add(f"fields/{m}/id/{name}", m, enc(t, id=value))
    add(f"fields/{m}/id/valid-unknown", m, enc(t, id=rid()))
    for name, value in [("zero", b""), ("59-minutes", dur(3599)), ("400-days-and-a-second", dur(400 * 86_400 + 1)),
                        ("hour-and-a-nano", dur(3600, 1)), ("negative", dur(-3600)), ("negative-nanos", dur(3600, -1)),
                        ("i64-max", dur(I64_MAX)), ("i64-min", dur(I64_MIN))]:
        add(f"fields/{m}/window/{name}", m, enc(t, id=rid(), window=value))
    add(f"fields/{m}/window/bad-and-bad-id", m, enc(t, id="x", window=dur(1)))
    for name, value in [("one-hour", dur(3600)), ("400-days", dur(400 * 86_400))]:
        add(f"fields/{m}/window/valid-{name}", m, enc(t, id=rid(), window=value))
    for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"), ("reporter", "PERMISSION_DENIED")):
        add(f"fields/{m}/auth-{auth}/random-id", m, enc(t, id=rid()), auth=auth, expect=[code])


def usage_entry(**over):
    entry = {"key_id": rid(), "last_used_time": ts(PAST)}
    entry.update(over)
    return entry


def report_body(*entries):
    return enc("ReportKeyUsageRequest", usages=list(entries))


def fields_report():
    m = "ReportKeyUsage"
    add(f"fields/{m}/empty", m, b"", auth="reporter")
    add(f"fields/{m}/valid-unknown-key", m, report_body(usage_entry()), auth="reporter")
    add(f"fields/{m}/valid-as-admin", m, report_body(usage_entry()))
    for name, value in BAD_UUIDS[:8] + BAD_UUIDS[11:12]:
        add(f"fields/{m}/usages.key_id/{name}", m, report_body(usage_entry(key_id=value)), auth="reporter")
    add(f"fields/{m}/usages.last_used_time/missing", m, report_body(usage_entry(last_used_time=None)), auth="reporter")
    for name, value in BAD_TIMESTAMPS[:6]:
        add(f"fields/{m}/usages.last_used_time/{name}", m, report_body(usage_entry(last_used_time=value)), auth="reporter")
    add(f"fields/{m}/usages.last_used_time/valid-future-clamped", m,
        report_body(usage_entry(last_used_time=ts(FUTURE))), auth="reporter")
    for name, value in [("word", "nope"), ("with-port", "1.2.3.4:443"), ("cidr", "10.0.0.0/8"), ("10k", "9" * K10)]:
        add(f"fields/{m}/usages.last_used_address/{name}", m, report_body(usage_entry(last_used_address=value)),
            auth="reporter")
    add(f"fields/{m}/usages.last_used_address/valid-padded", m,
        report_body(usage_entry(last_used_address=" 2001:db8::7 ")), auth="reporter")
    for name, value in [("10k", "agent" * 2000), ("control", "\x00\x1b[31m"), ("unicode", "\u202e\U0001f600")]:
        add(f"fields/{m}/usages.last_used_agent/hostile-but-valid-{name}", m,
            report_body(usage_entry(last_used_agent=value)), auth="reporter")
    for name, value in [("257", ["read_data"] * 257), ("uppercase", ["READ"]), ("empty-name", [""]), ("65-chars", ["a" * 65])]:
        add(f"fields/{m}/usages.exercised_permissions/{name}", m,
            report_body(usage_entry(exercised_permissions=value)), auth="reporter")
    add(f"fields/{m}/usages.exercised_permissions/valid-not-in-catalog", m,
        report_body(usage_entry(exercised_permissions=["whatever:else"])), auth="reporter")
    add(f"fields/{m}/usages/one-bad-of-three", m,
        report_body(usage_entry(), usage_entry(key_id="bad"), usage_entry()), auth="reporter")
    add(f"fields/{m}/usages/empty-entry", m, report_body({}), auth="reporter")
    add(f"fields/{m}/auth-none/valid", m, report_body(usage_entry()), auth="none", expect=["UNAUTHENTICATED"])
    add(f"fields/{m}/auth-reader/valid", m, report_body(usage_entry()), auth="reader", expect=["PERMISSION_DENIED"])
    add(f"fields/{m}/auth-reader/bad", m, report_body({}), auth="reader", expect=["PERMISSION_DENIED"])


def policy_body(policy=None, mask=None):
    return enc("UpdateOrgPolicyRequest", policy=policy, update_mask=mask)


def fields_policy():
    m = "GetOrgPolicy"
    add(f"fields/{m}/empty", m, b"")
    add(f"fields/{m}/unknown-field", m, f_str(1, "ignored") + f_varint(2, 7))
    for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"), ("reporter", "PERMISSION_DENIED")):
        add(f"fields/{m}/auth-{auth}/empty", m, b"", auth=auth, expect=[code])
    m = "UpdateOrgPolicy"
    add(f"fields/{m}/policy/missing", m, policy_body(mask=fmask("lockout_threshold")))
    add(f"fields/{m}/policy/missing-no-mask", m, b"")
    for name, paths in [("unknown", ["foo"]), ("trailing-space", ["lockout_threshold "]),
                        ("prefixed", ["policy.lockout_threshold"]), ("empty-path", [""]), ("camel-case", ["lockoutThreshold"]),
                        ("valid-then-unknown", ["lockout_threshold", "x"]), ("10k", ["x"] * K10)]:
        add(f"fields/{m}/update_mask/{name}", m, policy_body({"lockout_threshold": 100}, fmask(*paths)))
    for name, value in [("minus-1", -1), ("i32-min", I32_MIN)]:
        add(f"fields/{m}/policy.lockout_threshold/{name}", m, policy_body({"lockout_threshold": value}))
        add(f"fields/{m}/policy.lockout_threshold/{name}-masked", m,
            policy_body({"lockout_threshold": value}, fmask("lockout_threshold")))
    add(f"fields/{m}/policy.lockout_threshold/varint-2pow32-minus-1", m,
        f_len(1, f_varint(1, (1 << 32) - 1)))
    for name, value in [("30-seconds", dur(30)), ("59-seconds", dur(59)), ("negative", dur(-60)), ("nanos", dur(60, 1)),
                        ("negative-nanos", dur(0, -1)), ("i64-min", dur(I64_MIN))]:
        add(f"fields/{m}/policy.max_key_lifetime/{name}", m,
            policy_body({"lockout_threshold": 100, "max_key_lifetime": value}))
        add(f"fields/{m}/policy.max_key_lifetime/{name}-masked", m,
            policy_body({"max_key_lifetime": value}, fmask("max_key_lifetime")))
    # Valid requests that only restore the defaults (lockout 100, no maximum lifetime).
    add(f"fields/{m}/valid/defaults-no-mask", m, policy_body({"lockout_threshold": 100}))
    add(f"fields/{m}/valid/defaults-star", m, policy_body({"lockout_threshold": 100}, fmask("*")))
    add(f"fields/{m}/valid/zero-lifetime-is-none", m,
        policy_body({"lockout_threshold": 100, "max_key_lifetime": b""}, fmask("*")))
    add(f"fields/{m}/valid/bad-threshold-not-in-mask", m,
        policy_body({"lockout_threshold": -1}, fmask("max_key_lifetime")))
    add(f"fields/{m}/valid/bad-lifetime-not-in-mask", m,
        policy_body({"lockout_threshold": 100, "max_key_lifetime": dur(-5)}, fmask("lockout_threshold")))
    add(f"fields/{m}/valid/duplicate-paths", m,
        policy_body({"lockout_threshold": 100}, fmask("lockout_threshold", "lockout_threshold")))
    for auth, code in (("none", "UNAUTHENTICATED"), ("reader", "PERMISSION_DENIED"), ("reporter", "PERMISSION_DENIED")):
        add(f"fields/{m}/auth-{auth}/lockout-zero", m, policy_body({"lockout_threshold": 0}), auth=auth, expect=[code])
        add(f"fields/{m}/auth-{auth}/bad", m, policy_body(), auth=auth, expect=[code])


def fields_watch_keys():
    m, t = "WatchKeyChanges", "WatchKeyChangesRequest"
    add(f"fields/{m}/empty-starts-now", m, b"", auth="none")
    u = rid()
    for name, value in [("garbage", "garbage"), ("uuid-only", u), ("negative-seq", u + ".-1"), ("alpha-seq", u + ".abc"),
                        ("no-instance", ".5"), ("seq-overflows-i64", u + ".99999999999999999999"), ("space-in-seq", u + ". 5"),
                        ("trailing-space", u + ".5 "), ("leading-space", " " + u + ".5"), ("bad-uuid", "nope.5"),
                        ("empty-seq", u + "."), ("10k", "c" * K10), ("two-dots", u + ".5.6"), ("hex-seq", u + ".0x10"),
                        ("nul", u + ".5\x00"), ("underscore-seq", u + ".1_000"), ("unicode-digits", u + ".\u0665")]:
        add(f"fields/{m}/cursor/{name}", m, enc(t, cursor=value), auth="none")
    for name, value in [("other-instance", rid() + ".0"), ("plus-sign", rid() + ".+5"), ("i64-max", rid() + f".{I64_MAX}"),
                        ("braced-uuid", "{" + rid() + "}.3")]:
        add(f"fields/{m}/cursor/valid-{name}", m, enc(t, cursor=value), auth="none")
    add(f"fields/{m}/auth-reader/bad-cursor", m, enc(t, cursor="x"), auth="reader")


# ------------------------------------------------------------------------------------------------
# 2. Wrong types and broken encodings, via raw protobuf bytes
# ------------------------------------------------------------------------------------------------

def wire_base(method):
    """A request each wire mutation starts from, and the auth to send it with."""
    t = METHODS[method][0]
    if method == "CreateApiKey":
        return create_body(display_name="Corpus wire probe", expire_time=ts(FUTURE), allowed_cidrs=["10.0.0.0/8"],
                           rate_limit={"requests": 10, "window": dur(60)}), "admin"
    if method == "ListApiKeys":
        return enc(t, page_size=10, name_contains="x", permission="read_data", state=1, expiring_before=ts(FUTURE),
                   show_deleted=True), "admin"
    if method == "UpdateApiKey":
        return update_body({"id": rid(), "display_name": "Corpus renamed", "rate_limit": {"requests": 1, "window": dur(1)}},
                           fmask("display_name", "rate_limit"), etag='"1"', acknowledge_app_impact=True), "admin"
    if method == "RegenerateApiKeySecret":
        return enc(t, id=rid(), etag='"3"', acknowledge_app_impact=True, previous_secret_ttl=dur(60)), "admin"
    if method in ("DeleteApiKey", "DisableApiKey"):
        return enc(t, id=rid(), etag='"3"', acknowledge_app_impact=True), "admin"
    if method in ("GetApiKey", "UndeleteApiKey", "UnlockApiKey", "EnableApiKey"):
        return enc(t, id=rid(), **({} if method == "GetApiKey" else {"etag": '"2"'})), "admin"
    if method == "Authenticate":
        return auth_body(token="apk_malformed", required_permissions=["read_data"], client_address="10.1.2.3",
                         caller_enforces_restrictions=True), "none"
    if method == "ListAuditEvents":
        return enc(t, page_size=5, key_id=rid(), actor_id="bootstrap", action="CREATE", start_time=ts(PAST),
                   end_time=ts(FUTURE)), "admin"
    if method == "WatchAuditEvents":
        return enc(t, start_time=ts(FUTURE)), "admin"
    if method == "GetApiKeyUsage":
        return enc(t, id=rid(), window=dur(7200)), "admin"
    if method == "ReportKeyUsage":
        return report_body(usage_entry(last_used_address="10.0.0.1", last_used_agent="corpus",
                                       exercised_permissions=["read_data"])), "reporter"
    if method == "UpdateOrgPolicy":
        return policy_body({"lockout_threshold": 100, "max_key_lifetime": b""}, fmask("lockout_threshold")), "admin"
    if method == "WatchKeyChanges":
        return enc(t, cursor=""), "none"
    return b"", ("none" if METHODS[method][1] == "public" else "admin")


INVALID_UTF8 = [
    ("ff-fe", b"\xff\xfe"),
    ("lone-continuation", b"abc\x80"),
    ("overlong-slash", b"\xc0\xaf"),
    ("surrogate", b"\xed\xa0\x80"),
    ("above-10ffff", b"\xf4\x90\x80\x80"),
    ("truncated-3-byte", b"\xe2\x82"),
    ("latin1", "caf\u00e9".encode("latin-1")),
]


def wrong_type(number, kind):
    """Field `number` of `kind` with a wire type prost refuses for it."""
    if kind in ("int32", "int64", "enum", "bool"):
        return [("as-length-delimited", f_len(number, b"\x01")), ("as-fixed32", f_fixed32(number, 1)),
                ("as-group", f_group(number))]
    return [("as-varint", f_varint(number, 1)), ("as-fixed64", f_fixed64(number, 1)), ("as-group", f_group(number))]


def deep_len(levels, number=99, core=b""):
    """`levels` nested length-delimited fields `number` (opaque bytes to prost: an unknown field)."""
    data = core
    for _ in range(levels):
        data = f_len(number, data)
    return data


def deep_groups(levels, number=99):
    data = b""
    for _ in range(levels):
        data = f_group(number, data)
    return data


STRUCTURAL = [
    ("length-past-end", lambda t: key(1 if t else 9, LEN) + varint(100) + b"abc"),
    ("varint-11-bytes", lambda t: key(9, VARINT) + b"\xff" * 10 + b"\x01"),
    ("field-number-0", lambda t: b"\x00\x01"),
    ("wire-type-7", lambda t: b"\x4f\x00"),
    ("end-group-at-top", lambda t: key(9, EGROUP)),
    ("varint-truncated", lambda t: key(9, VARINT) + b"\xff\xff"),
    ("length-u64-max", lambda t: key(9, LEN) + varint((1 << 64) - 1) + b"x"),
    ("wire-type-6", lambda t: b"\x4e\x00"),
    ("key-above-u32", lambda t: b"\x80\x80\x80\x80\x10"),
    ("group-end-mismatch", lambda t: key(9, SGROUP) + key(10, EGROUP)),
    ("group-unterminated", lambda t: key(9, SGROUP) + f_varint(1, 1)),
    ("fixed32-short", lambda t: key(9, I32) + b"\x01\x02"),
    ("varint-10th-byte-overflow", lambda t: key(9, VARINT) + b"\xff" * 9 + b"\x02"),
    ("groups-nested-150", lambda t: deep_groups(150)),
]


def wire_cases():
    utf8 = 0
    for i, (method, (mtype, access)) in enumerate(METHODS.items()):
        base, auth = wire_base(method)
        table = SCHEMA[mtype]
        p = f"wire/{method}"
        # Each field with a wire type prost refuses for it (all variants for the first field).
        for j, number in enumerate(sorted(table)):
            name, kind, _ = table[number]
            for label, data in wrong_type(number, kind)[: 3 if j == 0 else 1]:
                add(f"{p}/{name}/{label}", method, base + data, auth=auth)
        # Strings that are not UTF-8 (two fields per message, the variants taken in turn).
        strings = [(n, s[0]) for n, s in sorted(table.items()) if s[1] == "string"]
        for number, name in strings[:2]:
            label, data = INVALID_UTF8[utf8 % len(INVALID_UTF8)]
            utf8 += 1
            add(f"{p}/{name}/invalid-utf8-{label}", method, base + f_str(number, data), auth=auth)
        # Truncated inside a field.
        if len(base) > 3:
            cut = [k for k in range(1, len(base)) if probe(method, auth, base[:k]) == INVALID]
            for k in sorted({cut[0], cut[len(cut) // 2]}) if cut else []:
                add(f"{p}/truncated-at-{k}-of-{len(base)}", method, base[:k], auth=auth)
        # Broken structure: three kinds per RPC, in turn, so that every kind meets several RPCs.
        for k in range(3):
            label, make = STRUCTURAL[(3 * i + k) % len(STRUCTURAL)]
            add(f"{p}/{label}", method, base + make(table), auth=auth)
        if method in ("ListPermissions", "GetApiKey", "WatchKeyChanges", "Authenticate"):
            add(f"{p}/groups-nested-64-ignored", method, base + deep_groups(64), auth=auth)
            add(f"{p}/unknown-fields-ignored", method,
                base + f_varint(99, 1) + f_fixed32(98, 2) + f_fixed64(97, 3) + f_str(96, b"\xff") + f_group(95), auth=auth)
        # Unknown fields of every wire type are skipped: the answer is that of `base`.
        if method in ("CreateApiKey", "ListApiKeys", "UpdateApiKey", "ReportKeyUsage", "UpdateOrgPolicy",
                      "GetApiKeyUsage", "DeleteApiKey", "ListAuditEvents"):
            add(f"{p}/unknown-fields-ignored", method,
                f_varint(1000, 1) + base + f_str(536_870_911, b"\xff\xfe") + f_group(77, f_varint(1, 1)), auth=auth)
        if access != "public" and i % 3 == 0:
            add(f"{p}/auth-none/garbage", method, b"\xff\xff\xff", auth="none")
        if method in ("CreateApiKey", "UpdateApiKey", "ReportKeyUsage", "WatchAuditEvents"):
            add(f"{p}/auth-reader/garbage", method, b"\xff\xff\xff", auth="reader")
    wire_nested()
    wire_random_blobs()


def wire_nested():
    """Message-typed fields holding garbage, deep nesting, repeats."""
    m = "UpdateApiKey"
    k = {"id": rid(), "display_name": "Corpus renamed"}
    inner = enc("ApiKey", **k)
    mask = f_len(2, fmask("display_name"))
    add(f"wire/{m}/api_key/64-levels-of-nested-length-delimited", m, f_len(1, inner + deep_len(64)) + mask)
    add(f"wire/{m}/api_key/64-levels-of-nested-groups", m, f_len(1, inner + deep_groups(64)) + mask)
    # prost's recursion budget is 100 at the top and 99 inside api_key: 99 nested groups there are
    # skipped, the 100th level is refused.
    add(f"wire/{m}/api_key/99-levels-of-nested-groups", m, f_len(1, inner + deep_groups(99)) + mask)
    add(f"wire/{m}/api_key/100-levels-of-nested-groups", m, f_len(1, inner + deep_groups(100)) + mask)
    add(f"wire/{m}/api_key/garbage-bytes", m, f_len(1, b"\xff" * 16) + mask)
    add(f"wire/{m}/api_key/length-past-its-end", m, f_len(1, inner + key(3, LEN) + varint(50) + b"xy") + mask)
    add(f"wire/{m}/api_key.rate_limit/as-varint", m, f_len(1, inner + f_varint(20, 5)) + mask)
    add(f"wire/{m}/api_key.rate_limit.window/as-string", m, f_len(1, inner + f_len(20, f_str(2, "1s"))) + mask)
    add(f"wire/{m}/api_key.expire_time.nanos/as-length-delimited", m,
        f_len(1, inner + f_len(15, f_len(2, b"\x01"))) + f_len(2, fmask("expire_time")))
    add(f"wire/{m}/api_key.created_by/invalid-utf8", m, f_len(1, inner + f_len(7, f_str(2, b"\xff"))) + mask)
    add(f"wire/{m}/update_mask/as-varint-without-mask", m, f_len(1, inner) + f_varint(2, 1))
    add(f"wire/{m}/update_mask.paths/invalid-utf8", m, f_len(1, inner) + f_len(2, f_str(1, b"display_name\xff")))
    # Repeated singular fields: strings keep the last value, messages merge.
    add(f"wire/{m}/api_key/repeated-messages-merge", m,
        f_len(1, enc("ApiKey", id="bad")) + f_len(1, enc("ApiKey", id=rid())) + f_len(1, enc("ApiKey", display_name="Corpus x")) + mask)
    add(f"wire/{m}/api_key.id/bad-then-good-last-wins", m,
        f_len(1, f_str(1, "bad") + f_str(1, rid()) + f_str(3, "Corpus y")) + mask)
    add(f"wire/{m}/api_key.id/good-then-bad-last-wins", m,
        f_len(1, f_str(1, rid()) + f_str(1, "bad") + f_str(3, "Corpus y")) + mask)
    m = "GetApiKey"
    add(f"wire/{m}/id/bad-then-good-last-wins", m, f_str(1, "bad") + f_str(1, rid()))
    add(f"wire/{m}/id/good-then-bad-last-wins", m, f_str(1, rid()) + f_str(1, "bad"))
    add(f"wire/{m}/id/good-then-invalid-utf8", m, f_str(1, rid()) + f_str(1, b"\xc3"))
    m = "ListApiKeys"
    add(f"wire/{m}/expiring_before/64-levels-of-nested-length-delimited", m, f_len(7, deep_len(64, number=3)))
    add(f"wire/{m}/expiring_before/150-levels-of-nested-groups", m, f_len(7, deep_groups(150, number=3)))
    add(f"wire/{m}/expiring_before/seconds-as-length-delimited", m, f_len(7, f_len(1, b"\x05")))
    add(f"wire/{m}/expiring_before/inner-length-past-end", m, f_len(7, key(1, VARINT) + b"\x80"))
    add(f"wire/{m}/page_size/packed", m, f_len(1, varint(5) + varint(6)))
    add(f"wire/{m}/page_size/last-wins-negative", m, f_varint(1, 10) + f_varint(1, -1))
    add(f"wire/{m}/page_size/last-wins-positive", m, f_varint(1, -1) + f_varint(1, 10))
    add(f"wire/{m}/state/as-string", m, f_str(6, "STATE_ACTIVE"))
    m = "ReportKeyUsage"
    add(f"wire/{m}/usages/as-varint-alone", m, f_varint(1, 3), auth="reporter")
    add(f"wire/{m}/usages/garbage-entry", m, f_len(1, b"\xff\xff"), auth="reporter")
    add(f"wire/{m}/usages.last_used_time/as-varint", m, f_len(1, f_str(1, rid()) + f_varint(2, 1)), auth="reporter")
    add(f"wire/{m}/usages/64-levels-of-nested-length-delimited", m,
        f_len(1, enc("KeyUsage", **usage_entry()) + deep_len(64, number=6)), auth="reporter")
    add(f"wire/{m}/usages/100-levels-of-nested-groups", m,
        f_len(1, enc("KeyUsage", **usage_entry()) + deep_groups(100, number=6)), auth="reporter")
    m = "UpdateOrgPolicy"
    add(f"wire/{m}/policy/as-varint-with-mask", m, f_varint(1, 100) + f_len(2, fmask("lockout_threshold")))
    add(f"wire/{m}/policy.max_key_lifetime/as-fixed64", m,
        f_len(1, f_varint(1, 100) + f_fixed64(2, 60)) + f_len(2, fmask("lockout_threshold")))
    add(f"wire/{m}/policy/64-levels-of-nested-length-delimited", m,
        f_len(1, f_varint(1, 100) + deep_len(64, number=5)) + f_len(2, fmask("lockout_threshold")))
    m = "RegenerateApiKeySecret"
    add(f"wire/{m}/previous_secret_ttl/garbage", m, f_str(1, rid()) + f_len(4, b"\x08"))
    add(f"wire/{m}/previous_secret_ttl/as-varint-with-id", m, f_str(1, rid()) + f_varint(4, 60))
    m = "GetApiKeyUsage"
    add(f"wire/{m}/window/nanos-as-fixed32", m, f_str(1, rid()) + f_len(2, f_varint(1, 3600) + f_fixed32(2, 0)))
    m = "WatchAuditEvents"
    add(f"wire/{m}/start_time/garbage", m, f_len(2, b"\x08\xff"))
    add(f"wire/{m}/start_time/64-levels-of-nested-length-delimited", m, f_len(2, deep_len(64, number=4)))


BLOB_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 11, 16, 23, 32, 48, 64, 100, 128, 200, 256, 333, 512, 777, 1024, 1500, 2048,
              3000, 4095, 4096]


def wire_random_blobs():
    methods = list(METHODS)
    for i, size in enumerate(BLOB_SIZES):
        for method in (methods[i % len(methods)],):
            access = METHODS[method][1]
            auth = {"public": "none", "admin": "admin", "report": "reporter"}[access]
            for _ in range(1000):
                blob = rbytes(size)
                try:
                    decode(METHODS[method][0], blob)
                except DecodeError:
                    break
            else:
                raise AssertionError("no undecodable blob")
            add(f"wire/{method}/random-blob-{size}-bytes", method, blob, auth=auth)


# ------------------------------------------------------------------------------------------------
# 3. Metadata
# ------------------------------------------------------------------------------------------------

def bad_authorizations():
    token = make_token()
    secret = make_secret()
    return [
        ("invalid-utf8", b"\xff\xfe"),
        ("empty", b""),
        ("bearer-alone", b"Bearer"),
        ("basic-bang", b"Basic !!!"),
        ("bearer-10kb", b"Bearer " + b"A" * K10),
        ("bearer-apk-garbage", b"Bearer apk_%%garbage%%"),
        ("basic-bad-uuid", b"Basic " + base64.b64encode(b"not-a-uuid:" + secret.encode())),
        ("basic-no-colon", b"Basic " + base64.b64encode(b"no colon here")),
        ("basic-invalid-utf8", b"Basic " + base64.b64encode(b"\xff\xfe:\xfd")),
        ("other-scheme", b"Token abc"),
        ("tab-separator", b"Bearer\t" + token.encode()),
        ("bearer-well-formed-unknown", b"Bearer " + make_token().encode()),
        ("basic-well-formed-unknown", b"Basic " + base64.b64encode(f"{rid()}:{make_secret()}".encode())),
        ("mixed-case-scheme", b"bEaReR apk_x"),
        ("non-ascii-utf8", b"Bearer " + "\u00e9".encode() * 100),
        ("bad-checksum", b"Bearer " + make_token(checksum_ok=False).encode()),
        ("basic-only-padding", b"Basic ========"),
        ("token-then-garbage", b"Bearer " + token.encode() + b" extra"),
        ("512-bytes", b"Bearer " + b"a" * 505),
        ("513-bytes", b"Bearer " + b"a" * 506),
        ("obs-text", b"\x80" * 100),
        ("two-schemes", b"Basic Bearer " + token.encode()),
    ]


def metadata_cases():
    auths = bad_authorizations()
    for name, value in auths:
        add(f"metadata/GetOrgPolicy/authorization/{name}", "GetOrgPolicy", b"", auth="raw",
            metadata=[("authorization", value)])
    body_for = {
        "CreateApiKey": create_body(display_name="Corpus raw auth"),
        "ListApiKeys": b"",
        "GetApiKey": enc("GetApiKeyRequest", id=rid()),
        "ReportKeyUsage": report_body(usage_entry()),
        "WatchAuditEvents": b"",
        "DeleteApiKey": enc("DeleteApiKeyRequest", id=rid()),
    }
    picks = [auths[0], auths[1], auths[4], auths[11], auths[12]]
    for method, body in body_for.items():
        for name, value in picks:
            add(f"metadata/{method}/authorization/{name}", method, body, auth="raw", metadata=[("authorization", value)])
    add("metadata/GetOrgPolicy/no-headers-at-all", "GetOrgPolicy", b"", auth="raw", metadata=[])
    # Public RPCs never read the authorization header.
    for name, value in auths[:8]:
        add(f"metadata/Authenticate/authorization-ignored/{name}", "Authenticate", b"", auth="raw",
            metadata=[("authorization", value)])
    add("metadata/Authenticate/authorization-ignored/bad-token-in-body", "Authenticate", auth_body(token="apk_"),
        auth="raw", metadata=[("authorization", auths[0][1])])
    add("metadata/Authenticate/authorization-ignored/bad-client-address", "Authenticate",
        auth_body(token="apk_", client_address="nope"), auth="raw", metadata=[("authorization", auths[4][1])])
    for name, value in auths[:4]:
        add(f"metadata/ListPermissions/authorization-ignored/{name}", "ListPermissions", b"", auth="raw",
            metadata=[("authorization", value)])
    add("metadata/WatchKeyChanges/authorization-ignored/invalid-utf8", "WatchKeyChanges", b"", auth="raw",
        metadata=[("authorization", auths[0][1])])
    # x-request-id garbage: recorded only if printable ASCII of at most 128 characters, else replaced;
    # the request is answered as usual.
    request_ids = [
        ("invalid-utf8", b"\xff\xfe\xfd"),
        ("10kb", b"r" * K10),
        ("10kb-obs-text", b"\xe9" * K10),
        ("129-chars", b"r" * 129),
        ("tab-inside", b"req\tid"),
        ("log-forging", b"abc level=error msg=forged"),
        ("utf8-emoji", "\U0001f600".encode()),
        ("json", b'{"id":"x"}'),
    ]
    targets = [
        ("ListPermissions", b"", "none"),
        ("GetOrgPolicy", b"", "admin"),
        ("GetApiKey", enc("GetApiKeyRequest", id=rid()), "admin"),
        ("ListApiKeys", b"", "admin"),
        ("CreateApiKey", create_body(display_name=""), "admin"),
        ("DeleteApiKey", enc("DeleteApiKeyRequest", id=rid()), "admin"),
        ("UpdateOrgPolicy", policy_body({"lockout_threshold": 100}), "admin"),
        ("ReportKeyUsage", report_body(usage_entry()), "reporter"),
    ]
    for i, (method, body, auth) in enumerate(targets):
        for name, value in request_ids[i % 3: i % 3 + 3] if i else request_ids:
            add(f"metadata/{method}/x-request-id/{name}", method, body, auth=auth, metadata=[("x-request-id", value)])
    forwarded = [("garbage", b"garbage"), ("spoofed-list", b"127.0.0.1, 10.0.0.1, evil"), ("invalid-utf8", b"\xff"),
                 ("10kb", b"1.1.1.1," * 1250), ("v6-brackets", b"[::1]:443")]
    for name, value in forwarded:
        add(f"metadata/ListApiKeys/x-forwarded-for/{name}", "ListApiKeys", b"", metadata=[("x-forwarded-for", value)])
    add("metadata/Authenticate/x-forwarded-for/garbage", "Authenticate", b"", auth="none",
        metadata=[("x-forwarded-for", b"\xff\xfe")])
    add("metadata/WatchKeyChanges/x-forwarded-for/garbage", "WatchKeyChanges", b"", auth="none",
        metadata=[("x-forwarded-for", b"garbage, more garbage")])
    add("metadata/ReportKeyUsage/user-agent/invalid-utf8", "ReportKeyUsage", report_body(usage_entry()), auth="reporter",
        metadata=[("user-agent", b"\xff\xfe agent")])
    add("metadata/Authenticate/user-agent/10kb", "Authenticate", auth_body(token="apk_"), auth="none",
        metadata=[("user-agent", b"u" * K10)])
    add("metadata/ListPermissions/custom-header/invalid-utf8", "ListPermissions", b"", auth="none",
        metadata=[("x-custom", b"\xc3\x28\xa0\xa1")])
    add("metadata/GetOrgPolicy/custom-header/50-headers", "GetOrgPolicy", b"",
        metadata=[(f"x-h-{i}", b"v" * 100) for i in range(50)])
    add("metadata/GetApiKey/custom-header/repeated-request-id", "GetApiKey", enc("GetApiKeyRequest", id=rid()),
        metadata=[("x-request-id", b"one"), ("x-request-id", b"\xff"), ("x-request-id", b"three")])


# ------------------------------------------------------------------------------------------------
# 4. Valid-looking but hostile
# ------------------------------------------------------------------------------------------------

AMPLIFIED = ("INVALID_ARGUMENT per the code, but the answer echoes the request: every violation goes into "
             "grpc-message and again into grpc-status-details-bin (BadRequest), so these trailers run to "
             "{} and exceed the 16 KiB header list a hyper/tonic client accepts by default (the client then "
             "reports an h2 error, not the status); the server should cap the violations it reports and "
             "the length of values it quotes")


def amplification_cases():
    """Small requests whose INVALID_ARGUMENT answer is far larger than they are."""
    for cid, method, body, auth, size in [
        ("hostile/CreateApiKey/amplification/10k-unknown-permissions", "CreateApiKey",
         create_body(permissions=["x"] * K10), "admin", "~1.5 MB"),
        ("hostile/CreateApiKey/amplification/10k-empty-permissions", "CreateApiKey",
         create_body(permissions=[""] * K10), "admin", "~1.5 MB"),
        ("hostile/UpdateApiKey/amplification/10k-unknown-permissions", "UpdateApiKey",
         update_body({"id": rid(), "permissions": ["x"] * K10}, fmask("permissions")), "admin", "~1.5 MB"),
        ("hostile/ReportKeyUsage/amplification/1000-bad-entries", "ReportKeyUsage",
         report_body(*([{"key_id": "x"}] * 1000)), "reporter", "~250 kB"),
        ("hostile/Authenticate/amplification/256-bad-permission-names", "Authenticate",
         auth_body(token="apk_", required_permissions=["A"] * 256), "none", "~55 kB"),
        ("hostile/ListApiKeys/amplification/10k-permission-echoed", "ListApiKeys",
         enc("ListApiKeysRequest", permission="p" * K10), "admin", "~40 kB"),
        ("hostile/CreateApiKey/amplification/10k-permission-name-echoed", "CreateApiKey",
         create_body(permissions=["p" * K10]), "admin", "~40 kB"),
        ("hostile/CreateApiKey/amplification/10k-cidr-echoed", "CreateApiKey",
         create_body(allowed_cidrs=["1" * K10]), "admin", "~40 kB"),
        ("hostile/UpdateApiKey/amplification/10k-mask-path-echoed", "UpdateApiKey",
         update_body({"id": rid(), "display_name": "Corpus x"}, fmask("p" * K10)), "admin", "~40 kB"),
        ("hostile/UpdateOrgPolicy/amplification/10k-mask-path-echoed", "UpdateOrgPolicy",
         policy_body({"lockout_threshold": 100}, fmask("p" * K10)), "admin", "~40 kB"),
    ]:
        add(cid, method, body, auth=auth, unsure=AMPLIFIED.format(size))


def hostile_cases():
    m, t = "ListApiKeys", "ListApiKeysRequest"
    p = f"hostile/{m}/page_token"
    add(f"{p}/json-wrong-fingerprint", m, enc(t, page_token=jtoken({"k": "a", "f": "0000000000000000"})))
    add(f"{p}/json-forged-fingerprint", m, enc(t, page_token=jtoken({"k": "a", "f": FP_KEYS})),
        unsure="page tokens are not signed: a forged token with the right filter digest is accepted (OK)")
    add(f"{p}/json-sql-position", m, enc(t, page_token=jtoken({"k": "' OR 1=1 --", "f": FP_KEYS})),
        unsure="forged but well-formed: accepted (OK); the position is bound as a query parameter")
    add(f"{p}/json-valid-id", m, enc(t, page_token=jtoken({"k": "zzz", "i": rid(), "f": FP_KEYS})))
    add(f"{p}/json-extra-field", m, enc(t, page_token=jtoken({"k": "a", "f": FP_KEYS, "x": [1, 2, 3]})))
    add(f"{p}/json-bad-id", m, enc(t, page_token=jtoken({"k": "a", "i": "not-a-uuid", "f": FP_KEYS})))
    add(f"{p}/json-control-char", m, enc(t, page_token=jtoken({"k": "a\u0000", "f": FP_KEYS})))
    add(f"{p}/json-101-char-position", m, enc(t, page_token=jtoken({"k": "x" * 101, "f": FP_KEYS})))
    add(f"{p}/json-missing-f", m, enc(t, page_token=jtoken({"k": "a"})))
    add(f"{p}/json-missing-k", m, enc(t, page_token=jtoken({"f": FP_KEYS})))
    add(f"{p}/json-k-number", m, enc(t, page_token=jtoken({"k": 1, "f": FP_KEYS})))
    add(f"{p}/json-duplicate-k", m, enc(t, page_token=b64u('{"k":"a","k":"b","f":"%s"}' % FP_KEYS)))
    add(f"{p}/json-padded", m, enc(t, page_token=jtoken({"k": "a", "f": FP_KEYS}) + "="))
    add(f"{p}/json-null", m, enc(t, page_token=b64u("null")))
    add(f"{p}/json-empty-object", m, enc(t, page_token=b64u("{}")))
    add(f"{p}/json-trailing-garbage", m, enc(t, page_token=b64u('{"k":"a","f":"%s"}x' % FP_KEYS)))
    add(f"{p}/audit-token-on-keys", m, enc(t, page_token=jtoken({"k": f"2024-01-01T00:00:00Z|{rid()}", "f": FP_AUDIT})))
    add(f"{p}/filters-changed", m, enc(t, show_deleted=True, page_token=jtoken({"k": "a", "f": FP_KEYS})))
    add(f"{p}/filters-changed-permission", m, enc(t, permission="read_data", page_token=jtoken({"k": "a", "f": FP_KEYS})))
    add(f"{p}/json-over-2048-chars", m, enc(t, page_token=jtoken({"k": "a", "f": FP_KEYS, "pad": "p" * 1600})))
    add(f"{p}/random-bytes", m, enc(t, page_token=b64u(rbytes(64))))
    m, t = "ListAuditEvents", "ListAuditEventsRequest"
    p = f"hostile/{m}/page_token"
    add(f"{p}/json-forged-fingerprint", m, enc(t, page_token=jtoken({"k": f"2024-01-01T00:00:00Z|{rid()}", "f": FP_AUDIT})),
        unsure="page tokens are not signed: a forged token with the right filter digest is accepted (OK)")
    add(f"{p}/json-wrong-fingerprint", m, enc(t, page_token=jtoken({"k": f"2024-01-01T00:00:00Z|{rid()}", "f": FP_KEYS})))
    add(f"{p}/json-no-bar", m, enc(t, page_token=jtoken({"k": "2024-01-01T00:00:00Z", "f": FP_AUDIT})))
    add(f"{p}/json-bad-time", m, enc(t, page_token=jtoken({"k": f"yesterday|{rid()}", "f": FP_AUDIT})))
    add(f"{p}/json-bad-id", m, enc(t, page_token=jtoken({"k": "2024-01-01T00:00:00Z|nope", "f": FP_AUDIT})))
    add(f"{p}/keys-token-on-audit", m, enc(t, page_token=jtoken({"k": "a", "i": rid(), "f": FP_KEYS})))
    add(f"{p}/filters-changed", m,
        enc(t, action="DELETE", page_token=jtoken({"k": f"2024-01-01T00:00:00Z|{rid()}", "f": FP_AUDIT})))
    p = f"hostile/{m}/filters"
    add(f"{p}/action-sql", m, enc(t, action="'; DROP TABLE audit_events; --"))
    add(f"{p}/key-id-wildcard", m, enc(t, key_id="*"))
    add(f"{p}/actor-id-escape", m, enc(t, actor_id="\x1b[2J"))
    add(f"{p}/empty-range", m, enc(t, start_time=ts(FUTURE), end_time=ts(FUTURE)))
    m = "ListApiKeys"
    add(f"hostile/{m}/filters/state-42", m, enc("ListApiKeysRequest", state=42))
    add(f"hostile/{m}/filters/permission-wildcard", m, enc("ListApiKeysRequest", permission="%"))
    amplification_cases()
    m = "ReportKeyUsage"
    p = f"hostile/{m}/usages"
    add(f"{p}/1001-empty-entries", m, report_body(*([{}] * 1001)), auth="reporter")
    add(f"{p}/1001-valid-entries", m, report_body(*[usage_entry() for _ in range(1001)]), auth="reporter")
    add(f"{p}/1000-valid-entries", m, report_body(*[usage_entry() for _ in range(1000)]), auth="reporter")
    add(f"{p}/1001-valid-entries-as-admin", m, report_body(*[usage_entry(key_id=rid()) for _ in range(1001)]))
    add(f"{p}/same-key-1000-times", m, report_body(*([usage_entry(key_id=rid())] * 1000)), auth="reporter")
    add(f"{p}/4000-entries-bad", m, report_body(*([{"key_id": "x"}] * 4000)), auth="reporter")
    m, t = "WatchKeyChanges", "WatchKeyChangesRequest"
    p = f"hostile/{m}/cursor"
    for name, value in [("audit-cursor", audit_cursor()), ("page-token", jtoken({"k": "a", "f": FP_KEYS})),
                        ("negative-zero-padded", rid() + ".-0000001"), ("sql", "1; DROP TABLE key_changes"),
                        ("uuid-with-zone", rid() + "%eth0.1"), ("urn-wrong-prefix", "urn:uid:" + rid() + ".1")]:
        add(f"{p}/{name}", m, enc(t, cursor=value), auth="none")
    m, t = "WatchAuditEvents", "WatchAuditEventsRequest"
    p = f"hostile/{m}"
    add(f"{p}/cursor-and-start-time", m, enc(t, cursor=audit_cursor(), start_time=ts(PAST)))
    add(f"{p}/garbage-cursor-and-start-time", m, enc(t, cursor="garbage", start_time=ts(PAST)))
    add(f"{p}/cursor-and-epoch-start-time", m, enc(t, cursor=audit_cursor(), start_time=b""))
    add(f"{p}/cursor-and-bad-start-time", m, enc(t, cursor=audit_cursor(), start_time=ts(0, -1)))
    add(f"{p}/keys-cursor", m, enc(t, cursor=rid() + ".5"))
    add(f"{p}/page-token-as-cursor", m, enc(t, cursor=jtoken({"k": "a", "f": FP_AUDIT})))


# ------------------------------------------------------------------------------------------------


def main():
    fields_create()
    fields_simple_id_rpcs()
    fields_list_keys()
    fields_update()
    fields_regenerate()
    fields_authenticate()
    fields_list_permissions()
    fields_audit_list()
    fields_watch_audit()
    fields_usage()
    fields_report()
    fields_policy()
    fields_watch_keys()
    wire_cases()
    metadata_cases()
    hostile_cases()

    with open(OUT, "w", encoding="ascii", newline="\n") as out:
        for case in CASES:
            out.write(json.dumps(case, separators=(",", ":")) + "\n")

    by_category = collections.Counter(c["id"].split("/")[0] for c in CASES)
    by_method = collections.Counter(c["method"] for c in CASES)
    by_code = collections.Counter(code for c in CASES for code in c["expect"])
    by_auth = collections.Counter(c["auth"] for c in CASES)
    print(f"wrote {len(CASES)} cases to {os.path.relpath(OUT)} ({os.path.getsize(OUT):,} bytes)")
    print("per category:")
    for name, n in sorted(by_category.items()):
        print(f"  {name:24} {n}")
    print("per method:")
    for name in METHODS:
        print(f"  {name:24} {by_method[name]}")
    print("per expected code (a case may accept several):")
    for name, n in sorted(by_code.items()):
        print(f"  {name:24} {n}")
    print("per auth:")
    for name, n in sorted(by_auth.items()):
        print(f"  {name:24} {n}")
    print(f"cases accepting more than one code: {sum(1 for c in CASES if len(c['expect']) > 1)}")
    print(f"keys the corpus may create (CreateApiKey answered OK): {len(CREATED)}")
    for name in CREATED:
        print(f"  {name[:60]!r}")
    print(f"cases whose expectation rests on an assumption: {len(UNSURE)} (see the unsure= notes in generate.py)")


if __name__ == "__main__":
    sys.exit(main())
