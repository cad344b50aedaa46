"""The protocol table: per Entry `protocol`, its family, status reading, error rule, KFL vocabulary and
span naming — read by the gateway (`/api/stats`, `/api/protocols`), the tracer (spans, service map,
RED metrics), KFL and the UI (served as JSON).

Rule: what a protocol *means* to a consumer is decided here and only here. A consumer never tests
`protocol == "grpc"` for an error, a status text or a family; it asks this table. Adding a protocol is
one row (and its dissector module); an unknown name reads as a generic transport row, never an error.

The error rules follow the OpenTelemetry semantic conventions (http-spans.md#status, rpc/grpc.md): an
HTTP status >= 400 is the caller's error and >= 500 the server's; a gRPC call is judged by its
`grpc_status` whatever the HTTP status under it; an Entry whose `error` is set is an error for both sides.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

Family = Literal[
    "http", "rpc", "messaging", "database", "dns", "directory", "aaa", "tls", "transport", "network"
]  # fmt: skip
SpanNaming = Literal["http", "rpc", "dns", "messaging", "database", "method", "summary"]

# Longest span name kept; beyond it names are cut (tracing backends index them).
MAX_NAME_CHARS: Final = 200
# Paths whose route (`route_of`) is remembered: paths repeat, and folding them is per entry.
MAX_ROUTES: Final = 8_192
# Unknown protocol names whose generic row is remembered (plugins emit a handful; more is hostile).
MAX_UNKNOWN: Final = 256
# Path segments that look like identifiers are folded in span names to keep their cardinality low.
_ID_SEGMENT: Final = re.compile(r"^(?:\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{36})$")
_ID_START: Final = frozenset("0123456789abcdefABCDEF-")
# `http.request.method` values the semconv registry knows; any other is `_OTHER` (http-spans.md).
HTTP_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)


@dataclass(frozen=True, slots=True)
class Codes:
    """A set of status codes: the listed ones plus inclusive ranges (None = unbounded on that side)."""

    codes: frozenset[int] = frozenset()
    ranges: tuple[tuple[int | None, int | None], ...] = ()

    def __contains__(self, code: object) -> bool:
        if not isinstance(code, int):
            return False
        if code in self.codes:
            return True
        for lo, hi in self.ranges:  # noqa: SIM110 - a loop, not any(<generator>): this runs per entry, twice
            if (lo is None or code >= lo) and (hi is None or code <= hi):
                return True
        return False

    def to_json(self) -> dict[str, Any]:
        return {"codes": sorted(self.codes), "ranges": [list(r) for r in self.ranges]}


NONE: Final = Codes()
NONZERO: Final = Codes(ranges=((None, -1), (1, None)))


@dataclass(frozen=True, slots=True)
class StatusRule:
    """Where a protocol's status code is read, how it is shown, and which codes are errors.

    A row has one or more rules; the first whose `path` holds an integer decides (gRPC: the
    `grpc_status` trailer, and only without one the HTTP status under it).
    """

    path: tuple[str, ...]  # into the Entry document
    client_errors: Codes = NONE  # codes that are an error for the caller
    server_errors: Codes = NONE  # codes that are the server's fault
    names: Mapping[int, str] = field(default_factory=dict)  # code → name ("UNAVAILABLE", "NXDOMAIN")
    text: str = "{code}"  # status text: "{code}", "{name}", "{name} ({code})"; no name → "{code}"
    error_type: str = "{code}"  # the `error.type` of an error code
    classes: bool = False  # the codes read as HTTP classes ("2xx" ... "5xx")

    def to_json(self) -> dict[str, Any]:
        return {
            "path": list(self.path),
            "client_errors": self.client_errors.to_json(),
            "server_errors": self.server_errors.to_json(),
            "names": {str(k): v for k, v in sorted(self.names.items())},
            "text": self.text,
            "error_type": self.error_type,
            "classes": self.classes,
        }


@dataclass(frozen=True, slots=True)
class ProtocolInfo:
    """One row: what an Entry with `protocol == name` means to every consumer."""

    name: str  # the Entry's `protocol` value
    title: str  # display name
    family: Family
    transports: tuple[str, ...]
    description: str  # what an entry of it is; also the documentation of its KFL flag
    kfl_flags: tuple[str, ...]  # KFL flags true for its entries, its own first (`http` && `grpc`)
    kfl_fields: tuple[str, ...] = ()  # KFL variables defined only for entries of this protocol
    status: tuple[StatusRule, ...] = ()  # the first rule whose path holds a code decides
    span_naming: SpanNaming = "summary"
    system: str = ""  # the OpenTelemetry `rpc.system` / `db.system` / `messaging.system` value

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "family": self.family,
            "transports": list(self.transports),
            "description": self.description,
            "kfl_flags": list(self.kfl_flags),
            "kfl_fields": list(self.kfl_fields),
            "status": [rule.to_json() for rule in self.status],
            "span_naming": self.span_naming,
            "system": self.system,
        }


# gRPC status codes (grpc/doc/statuscodes.md).
GRPC_CODES: Final[Mapping[int, str]] = MappingProxyType({
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
})  # fmt: skip
# gRPC codes that make a *server* span an error (semconv rpc/grpc.md: UNKNOWN, DEADLINE_EXCEEDED,
# UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); every non-zero code is an error for the caller.
GRPC_SERVER_ERRORS: Final = frozenset({2, 4, 12, 13, 14, 15})
# DNS RCODEs (RFC 1035 §4.1.1, RFC 2136 §2.2).
DNS_RCODES: Final[Mapping[int, str]] = MappingProxyType({
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
    7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
})  # fmt: skip
# DNS RCODEs that mean the resolver failed rather than answered (SERVFAIL, REFUSED); NXDOMAIN is an answer.
DNS_ERROR_RCODES: Final = frozenset({2, 5})
# Kafka error codes (kafka.apache.org/protocol#protocol_error_codes; Errors.java).
KAFKA_ERRORS: Final[Mapping[int, str]] = MappingProxyType({
    -1: "UNKNOWN_SERVER_ERROR", 0: "NONE", 1: "OFFSET_OUT_OF_RANGE", 2: "CORRUPT_MESSAGE",
    3: "UNKNOWN_TOPIC_OR_PARTITION", 4: "INVALID_FETCH_SIZE", 5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER", 7: "REQUEST_TIMED_OUT", 8: "BROKER_NOT_AVAILABLE",
    9: "REPLICA_NOT_AVAILABLE", 10: "MESSAGE_TOO_LARGE", 11: "STALE_CONTROLLER_EPOCH",
    12: "OFFSET_METADATA_TOO_LARGE", 13: "NETWORK_EXCEPTION", 14: "COORDINATOR_LOAD_IN_PROGRESS",
    15: "COORDINATOR_NOT_AVAILABLE", 16: "NOT_COORDINATOR", 17: "INVALID_TOPIC_EXCEPTION",
    18: "RECORD_LIST_TOO_LARGE", 19: "NOT_ENOUGH_REPLICAS", 20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    21: "INVALID_REQUIRED_ACKS", 22: "ILLEGAL_GENERATION", 23: "INCONSISTENT_GROUP_PROTOCOL",
    24: "INVALID_GROUP_ID", 25: "UNKNOWN_MEMBER_ID", 26: "INVALID_SESSION_TIMEOUT",
    27: "REBALANCE_IN_PROGRESS", 28: "INVALID_COMMIT_OFFSET_SIZE", 29: "TOPIC_AUTHORIZATION_FAILED",
    30: "GROUP_AUTHORIZATION_FAILED", 31: "CLUSTER_AUTHORIZATION_FAILED", 32: "INVALID_TIMESTAMP",
    33: "UNSUPPORTED_SASL_MECHANISM", 34: "ILLEGAL_SASL_STATE", 35: "UNSUPPORTED_VERSION",
    36: "TOPIC_ALREADY_EXISTS", 37: "INVALID_PARTITIONS", 38: "INVALID_REPLICATION_FACTOR",
    39: "INVALID_REPLICA_ASSIGNMENT", 40: "INVALID_CONFIG", 41: "NOT_CONTROLLER", 42: "INVALID_REQUEST",
    43: "UNSUPPORTED_FOR_MESSAGE_FORMAT", 44: "POLICY_VIOLATION", 45: "OUT_OF_ORDER_SEQUENCE_NUMBER",
    46: "DUPLICATE_SEQUENCE_NUMBER", 47: "INVALID_PRODUCER_EPOCH", 48: "INVALID_TXN_STATE",
    49: "INVALID_PRODUCER_ID_MAPPING", 50: "INVALID_TRANSACTION_TIMEOUT", 51: "CONCURRENT_TRANSACTIONS",
    52: "TRANSACTION_COORDINATOR_FENCED", 53: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    54: "SECURITY_DISABLED", 55: "OPERATION_NOT_ATTEMPTED", 56: "KAFKA_STORAGE_ERROR",
    57: "LOG_DIR_NOT_FOUND", 58: "SASL_AUTHENTICATION_FAILED", 59: "UNKNOWN_PRODUCER_ID",
    60: "REASSIGNMENT_IN_PROGRESS", 61: "DELEGATION_TOKEN_AUTH_DISABLED", 62: "DELEGATION_TOKEN_NOT_FOUND",
    63: "DELEGATION_TOKEN_OWNER_MISMATCH", 64: "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
    65: "DELEGATION_TOKEN_AUTHORIZATION_FAILED", 66: "DELEGATION_TOKEN_EXPIRED",
    67: "INVALID_PRINCIPAL_TYPE", 68: "NON_EMPTY_GROUP", 69: "GROUP_ID_NOT_FOUND",
    70: "FETCH_SESSION_ID_NOT_FOUND", 71: "INVALID_FETCH_SESSION_EPOCH", 72: "LISTENER_NOT_FOUND",
    73: "TOPIC_DELETION_DISABLED", 74: "FENCED_LEADER_EPOCH", 75: "UNKNOWN_LEADER_EPOCH",
    76: "UNSUPPORTED_COMPRESSION_TYPE", 77: "STALE_BROKER_EPOCH", 78: "OFFSET_NOT_AVAILABLE",
    79: "MEMBER_ID_REQUIRED", 80: "PREFERRED_LEADER_NOT_AVAILABLE", 81: "GROUP_MAX_SIZE_REACHED",
    82: "FENCED_INSTANCE_ID", 83: "ELIGIBLE_LEADERS_NOT_AVAILABLE", 84: "ELECTION_NOT_NEEDED",
    85: "NO_REASSIGNMENT_IN_PROGRESS", 86: "GROUP_SUBSCRIBED_TO_TOPIC", 87: "INVALID_RECORD",
    88: "UNSTABLE_OFFSET_COMMIT", 89: "THROTTLING_QUOTA_EXCEEDED", 90: "PRODUCER_FENCED",
    91: "RESOURCE_NOT_FOUND", 92: "DUPLICATE_RESOURCE", 93: "UNACCEPTABLE_CREDENTIAL",
    94: "INCONSISTENT_VOTER_SET", 95: "INVALID_UPDATE_VERSION", 96: "FEATURE_UPDATE_FAILED",
    97: "PRINCIPAL_DESERIALIZATION_FAILURE", 98: "SNAPSHOT_NOT_FOUND", 99: "POSITION_OUT_OF_RANGE",
    100: "UNKNOWN_TOPIC_ID", 101: "DUPLICATE_BROKER_REGISTRATION", 102: "BROKER_ID_NOT_REGISTERED",
    103: "INCONSISTENT_TOPIC_ID", 104: "INCONSISTENT_CLUSTER_ID", 105: "TRANSACTIONAL_ID_NOT_FOUND",
    106: "FETCH_SESSION_TOPIC_ID_ERROR", 107: "INELIGIBLE_REPLICA", 108: "NEW_LEADER_ELECTED",
    109: "OFFSET_MOVED_TO_TIERED_STORAGE", 110: "FENCED_MEMBER_EPOCH", 111: "UNRELEASED_INSTANCE_ID",
    112: "UNSUPPORTED_ASSIGNOR", 113: "STALE_MEMBER_EPOCH", 114: "MISMATCHED_ENDPOINT_TYPE",
    115: "UNSUPPORTED_ENDPOINT_TYPE", 116: "UNKNOWN_CONTROLLER_ID", 117: "UNKNOWN_SUBSCRIPTION_ID",
    118: "TELEMETRY_TOO_LARGE", 119: "INVALID_REGISTRATION", 120: "TRANSACTION_ABORTABLE",
})  # fmt: skip
# AMQP 0-9-1 reply codes (the spec's constants; RabbitMQ's close reasons). 200 is a clean close.
AMQP_REPLY_CODES: Final[Mapping[int, str]] = MappingProxyType({
    200: "REPLY_SUCCESS", 311: "CONTENT_TOO_LARGE", 312: "NO_ROUTE", 313: "NO_CONSUMERS",
    320: "CONNECTION_FORCED", 402: "INVALID_PATH", 403: "ACCESS_REFUSED", 404: "NOT_FOUND",
    405: "RESOURCE_LOCKED", 406: "PRECONDITION_FAILED", 501: "FRAME_ERROR", 502: "SYNTAX_ERROR",
    503: "COMMAND_INVALID", 504: "CHANNEL_ERROR", 505: "UNEXPECTED_FRAME", 506: "RESOURCE_ERROR",
    530: "NOT_ALLOWED", 540: "NOT_IMPLEMENTED", 541: "INTERNAL_ERROR",
})  # fmt: skip

_HTTP_CLIENT: Final = Codes(ranges=((400, None),))
_HTTP_SERVER: Final = Codes(ranges=((500, None),))
_HTTP_RULES: Final = (
    StatusRule(("status",), _HTTP_CLIENT, _HTTP_SERVER, classes=True),
    StatusRule(("response", "status"), _HTTP_CLIENT, _HTTP_SERVER, classes=True),
)
_GRPC_RULES: Final = (
    StatusRule(
        ("response", "grpc_status"),
        client_errors=Codes(ranges=((1, None),)),
        server_errors=Codes(GRPC_SERVER_ERRORS),
        names=GRPC_CODES,
        text="{name} ({code})",
        error_type="{name}",  # semconv rpc/grpc.md: `error.type` is the status code's name
    ),
    *_HTTP_RULES,  # no grpc-status trailer (a proxy answered): the HTTP status under it decides
)
_DNS_RULES: Final = tuple(
    StatusRule(
        path,
        client_errors=Codes(DNS_ERROR_RCODES),
        server_errors=Codes(DNS_ERROR_RCODES),
        names=DNS_RCODES,
        text="{name}",
        error_type="rcode_{code}",
    )
    for path in (("status",), ("response", "rcode"))
)
_PLAIN: Final = (StatusRule(("status",)),)
_MESSAGING: Final = (StatusRule(("status",), NONZERO, NONZERO),)
# AMQP: `status` is the reply code of a close (or a basic.return); 300 and above is a failure, which the
# broker reports for both sides (a refused declare is the caller's mistake and the server's error span).
_AMQP_FAILED: Final = Codes(ranges=((300, None),))
_AMQP: Final = (
    StatusRule(("status",), _AMQP_FAILED, _AMQP_FAILED, AMQP_REPLY_CODES, "{name} ({code})", "{name}"),
)
# Stores report a failed command as a negative status.
_NEGATIVE: Final = Codes(ranges=((None, -1),))
# MySQL/MariaDB: the status is the ERR packet's error code (1064 …), 0 for an OK or a result set.
_MYSQL: Final = (StatusRule(("status",), NONZERO, NONZERO),)
_DATABASE: Final = (StatusRule(("status",), _NEGATIVE, _NEGATIVE, error_type="db_error"),)
# MongoDB: the status is a failed command's `code` (-1 when the reply has none), 0 for `ok: 1`; the
# error type is its codeName (error_codes.yml in the server's source) for the common codes; -1 is ours.
MONGODB_ERRORS: Final[Mapping[int, str]] = MappingProxyType({
    -1: "CommandFailed",
    1: "InternalError", 2: "BadValue", 9: "FailedToParse", 11: "UserNotFound", 13: "Unauthorized",
    14: "TypeMismatch", 18: "AuthenticationFailed", 20: "IllegalOperation", 26: "NamespaceNotFound",
    43: "CursorNotFound", 48: "NamespaceExists", 50: "MaxTimeMSExpired", 59: "CommandNotFound",
    67: "CannotCreateIndex", 85: "IndexOptionsConflict", 86: "IndexKeySpecsConflict",
    112: "WriteConflict", 251: "NoSuchTransaction", 10107: "NotWritablePrimary", 11000: "DuplicateKey",
    11600: "InterruptedAtShutdown", 13435: "NotPrimaryNoSecondaryOk",
})  # fmt: skip
_MONGODB: Final = (StatusRule(("status",), NONZERO, NONZERO, MONGODB_ERRORS, "{name} ({code})", "{name}"),)
# PostgreSQL: 0 is a completed command; an ErrorResponse leaves `status` unset and sets `error` with
# the SQLSTATE as its type (a five-character code, not a number), which is then the status text.
_POSTGRESQL: Final = (
    StatusRule(("status",), _NEGATIVE, _NEGATIVE, MappingProxyType({0: "OK"}), "{name}", "db_error"),
)
# RADIUS: the status is the answer's packet code (RFC 2865 §4, RFC 5176 §3); a refusal — Access-Reject,
# Password-Reject, Disconnect-NAK, CoA-NAK — is an error for both sides (as a failed login is).
RADIUS_CODES: Final[Mapping[int, str]] = MappingProxyType({
    1: "Access-Request", 2: "Access-Accept", 3: "Access-Reject", 4: "Accounting-Request",
    5: "Accounting-Response", 8: "Password-Ack", 9: "Password-Reject", 11: "Access-Challenge",
    12: "Status-Server", 40: "Disconnect-Request", 41: "Disconnect-ACK", 42: "Disconnect-NAK",
    43: "CoA-Request", 44: "CoA-ACK", 45: "CoA-NAK",
})  # fmt: skip
_RADIUS_REFUSED: Final = Codes(frozenset({3, 9, 42, 45}))
_RADIUS: Final = (
    StatusRule(("status",), _RADIUS_REFUSED, _RADIUS_REFUSED, RADIUS_CODES, "{name}", "{name}"),
)

# LDAP result codes (RFC 4511 §4.1.9 and Appendix A; RFC 3909 cancel, RFC 4528 assertion, RFC 4370
# proxied authorization, RFC 4533 sync). Appendix A.1's non-error codes — success, compareFalse,
# compareTrue, referral, saslBindInProgress — are no error; every other code is an error for both sides.
LDAP_RESULT_CODES: Final[Mapping[int, str]] = MappingProxyType({
    0: "success", 1: "operationsError", 2: "protocolError", 3: "timeLimitExceeded",
    4: "sizeLimitExceeded", 5: "compareFalse", 6: "compareTrue", 7: "authMethodNotSupported",
    8: "strongerAuthRequired", 10: "referral", 11: "adminLimitExceeded", 12: "unavailableCriticalExtension",
    13: "confidentialityRequired", 14: "saslBindInProgress", 16: "noSuchAttribute",
    17: "undefinedAttributeType", 18: "inappropriateMatching", 19: "constraintViolation",
    20: "attributeOrValueExists", 21: "invalidAttributeSyntax", 32: "noSuchObject", 33: "aliasProblem",
    34: "invalidDNSyntax", 36: "aliasDereferencingProblem", 48: "inappropriateAuthentication",
    49: "invalidCredentials", 50: "insufficientAccessRights", 51: "busy", 52: "unavailable",
    53: "unwillingToPerform", 54: "loopDetect", 64: "namingViolation", 65: "objectClassViolation",
    66: "notAllowedOnNonLeaf", 67: "notAllowedOnRDN", 68: "entryAlreadyExists",
    69: "objectClassModsProhibited", 71: "affectsMultipleDSAs", 80: "other", 118: "canceled",
    119: "noSuchOperation", 120: "tooLate", 121: "cannotCancel", 122: "assertionFailed",
    123: "authorizationDenied", 4096: "e-syncRefreshRequired",
})  # fmt: skip
_LDAP_ERRORS: Final = Codes(ranges=((None, -1), (1, 4), (7, 9), (11, 13), (15, None)))
_LDAP: Final = (
    StatusRule(("status",), _LDAP_ERRORS, _LDAP_ERRORS, LDAP_RESULT_CODES, "{name} ({code})", "{name}"),
)
# SMTP reply codes (RFC 5321 §4.2.1): 4yz (transient) and 5yz (permanent) are failures.
_SMTP_FAILED: Final = Codes(ranges=((400, 599),))
_SMTP: Final = (StatusRule(("status",), _SMTP_FAILED, _SMTP_FAILED),)
# IMAP (RFC 9051 §7.1) and POP3 (RFC 1939 §3): the status is the completion — 0 for OK/+OK, 1 for
# NO/-ERR, 2 for BAD; a refused or malformed command is an error for both sides.
_IMAP: Final = (
    StatusRule(
        ("status",), Codes(frozenset({1, 2})), Codes(frozenset({1, 2})),
        MappingProxyType({0: "OK", 1: "NO", 2: "BAD"}), "{name}", "{name}",
    ),
)  # fmt: skip
_POP3: Final = (
    StatusRule(
        ("status",), Codes(frozenset({1})), Codes(frozenset({1})), MappingProxyType({0: "+OK", 1: "-ERR"}),
        "{name}", "ERR",
    ),
)  # fmt: skip

# Diameter Result-Code values (RFC 6733 §7.1, RFC 4006 §9, RFC 4072 §6): 1xxx informational, 2xxx
# success, 3xxx protocol errors, 4xxx transient and 5xxx permanent failures.
DIAMETER_RESULT_CODES: Final[Mapping[int, str]] = MappingProxyType({
    1001: "DIAMETER_MULTI_ROUND_AUTH", 2001: "DIAMETER_SUCCESS", 2002: "DIAMETER_LIMITED_SUCCESS",
    3001: "DIAMETER_COMMAND_UNSUPPORTED", 3002: "DIAMETER_UNABLE_TO_DELIVER",
    3003: "DIAMETER_REALM_NOT_SERVED", 3004: "DIAMETER_TOO_BUSY", 3005: "DIAMETER_LOOP_DETECTED",
    3006: "DIAMETER_REDIRECT_INDICATION", 3007: "DIAMETER_APPLICATION_UNSUPPORTED",
    3008: "DIAMETER_INVALID_HDR_BITS", 3009: "DIAMETER_INVALID_AVP_BITS", 3010: "DIAMETER_UNKNOWN_PEER",
    4001: "DIAMETER_AUTHENTICATION_REJECTED", 4002: "DIAMETER_OUT_OF_SPACE", 4003: "ELECTION_LOST",
    4010: "DIAMETER_END_USER_SERVICE_DENIED", 4011: "DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE",
    4012: "DIAMETER_CREDIT_LIMIT_REACHED", 5001: "DIAMETER_AVP_UNSUPPORTED",
    5002: "DIAMETER_UNKNOWN_SESSION_ID", 5003: "DIAMETER_AUTHORIZATION_REJECTED",
    5004: "DIAMETER_INVALID_AVP_VALUE", 5005: "DIAMETER_MISSING_AVP", 5006: "DIAMETER_RESOURCES_EXCEEDED",
    5007: "DIAMETER_CONTRADICTING_AVPS", 5008: "DIAMETER_AVP_NOT_ALLOWED",
    5009: "DIAMETER_AVP_OCCURS_TOO_MANY_TIMES", 5010: "DIAMETER_NO_COMMON_APPLICATION",
    5011: "DIAMETER_UNSUPPORTED_VERSION", 5012: "DIAMETER_UNABLE_TO_COMPLY",
    5013: "DIAMETER_INVALID_BIT_IN_HEADER", 5014: "DIAMETER_INVALID_AVP_LENGTH",
    5015: "DIAMETER_INVALID_MESSAGE_LENGTH", 5016: "DIAMETER_INVALID_AVP_BIT_COMBO",
    5017: "DIAMETER_NO_COMMON_SECURITY", 5030: "DIAMETER_USER_UNKNOWN", 5031: "DIAMETER_RATING_FAILED",
})  # fmt: skip
# 3GPP Experimental-Result-Code values (vendor 10415; TS 29.229 §6.2, 29.272 §7.4, 29.212 §5.5,
# 29.214 §5.5), which reuse numbers of the base codes with other meanings.
DIAMETER_3GPP_RESULT_CODES: Final[Mapping[int, str]] = MappingProxyType({
    2001: "DIAMETER_FIRST_REGISTRATION", 2002: "DIAMETER_SUBSEQUENT_REGISTRATION",
    2003: "DIAMETER_UNREGISTERED_SERVICE", 2004: "DIAMETER_SUCCESS_SERVER_NAME_NOT_STORED",
    4100: "DIAMETER_USER_DATA_NOT_AVAILABLE", 4101: "DIAMETER_PRIOR_UPDATE_IN_PROGRESS",
    4141: "DIAMETER_PCC_BEARER_EVENT", 4181: "DIAMETER_AUTHENTICATION_DATA_UNAVAILABLE",
    4182: "DIAMETER_ERROR_CAMEL_SUBSCRIPTION_PRESENT", 5001: "DIAMETER_ERROR_USER_UNKNOWN",
    5002: "DIAMETER_ERROR_IDENTITIES_DONT_MATCH", 5003: "DIAMETER_ERROR_IDENTITY_NOT_REGISTERED",
    5004: "DIAMETER_ERROR_ROAMING_NOT_ALLOWED", 5005: "DIAMETER_ERROR_IDENTITY_ALREADY_REGISTERED",
    5006: "DIAMETER_ERROR_AUTH_SCHEME_NOT_SUPPORTED", 5007: "DIAMETER_ERROR_IN_ASSIGNMENT_TYPE",
    5008: "DIAMETER_ERROR_TOO_MUCH_DATA", 5009: "DIAMETER_ERROR_NOT_SUPPORTED_USER_DATA",
    5011: "DIAMETER_ERROR_FEATURE_UNSUPPORTED", 5061: "INVALID_SERVICE_INFORMATION",
    5062: "FILTER_RESTRICTIONS", 5063: "REQUESTED_SERVICE_NOT_AUTHORIZED",
    5065: "IP-CAN_SESSION_NOT_AVAILABLE", 5100: "DIAMETER_ERROR_USER_DATA_NOT_RECOGNIZED",
    5101: "DIAMETER_ERROR_OPERATION_NOT_ALLOWED", 5420: "DIAMETER_ERROR_UNKNOWN_EPS_SUBSCRIPTION",
    5421: "DIAMETER_ERROR_RAT_NOT_ALLOWED", 5422: "DIAMETER_ERROR_EQUIPMENT_UNKNOWN",
    5423: "DIAMETER_ERROR_UNKNOWN_SERVING_NODE",
})  # fmt: skip
# Diameter: every code from 3000 up is a failure for the caller; the server's fault are the answers
# that say a node could not do its job (unsupported command, cannot deliver, too busy, a routing
# loop, unable to comply); the rest (unknown user, invalid AVP, credit limit) are the request's.
_DIAMETER_FAILED: Final = Codes(ranges=((3000, None),))
_DIAMETER: Final = (
    StatusRule(
        ("response", "experimental_result_code"), _DIAMETER_FAILED, NONE, DIAMETER_3GPP_RESULT_CODES,
        "{name} ({code})", "{name}",
    ),
    StatusRule(
        ("status",), _DIAMETER_FAILED, Codes(frozenset({3001, 3002, 3004, 3005, 5012})),
        DIAMETER_RESULT_CODES, "{name} ({code})", "{name}",
    ),
)  # fmt: skip


def _row_of(
    name: str,
    title: str,
    family: Family,
    transports: tuple[str, ...],
    description: str,
    *,
    kfl_flags: tuple[str, ...] = (),
    kfl_fields: tuple[str, ...] = (),
    status: tuple[StatusRule, ...] = _PLAIN,
    span_naming: SpanNaming = "summary",
    system: str = "",
) -> ProtocolInfo:
    """A row whose own KFL flag is its name unless `kfl_flags` says otherwise."""
    flags = kfl_flags or (name,)
    return ProtocolInfo(
        name, title, family, transports, description, flags, kfl_fields, status, span_naming, system
    )


# In the order KFL lists its flags.
_TABLE: Final = (
    _row_of(
        "http", "HTTP/1", "http", ("tcp",), "HTTP/1.x or HTTP/2, including gRPC and GraphQL calls",
        status=_HTTP_RULES, span_naming="http",
    ),
    _row_of(
        "http2", "HTTP/2", "http", ("tcp",), "HTTP/2, including gRPC",
        kfl_flags=("http2", "http"), status=_HTTP_RULES, span_naming="http",
    ),
    _row_of(
        "grpc", "gRPC", "rpc", ("tcp",), "a gRPC call",
        kfl_flags=("grpc", "http2", "http"), kfl_fields=("grpc_method", "grpc_service", "grpc_status"),
        status=_GRPC_RULES, span_naming="rpc", system="grpc",
    ),
    _row_of(
        "ws", "WebSocket", "http", ("tcp",), "a WebSocket message", status=_HTTP_RULES, span_naming="http"
    ),
    _row_of(
        "graphql", "GraphQL", "http", ("tcp",), "a GraphQL operation",
        kfl_flags=("gql", "http"), kfl_fields=("gql_operation", "gql_type"),
        status=_HTTP_RULES, span_naming="http",
    ),
    _row_of(
        "dns", "DNS", "dns", ("udp", "tcp"), "a DNS query and answer",
        kfl_fields=("dns_questions", "dns_question_types", "dns_answers", "dns_rcode"),
        status=_DNS_RULES, span_naming="dns",
    ),
    _row_of("tcp", "TCP", "transport", ("tcp",), "a raw TCP exchange no protocol claimed"),
    _row_of("udp", "UDP", "transport", ("udp",), "a raw UDP exchange no protocol claimed"),
    _row_of(
        "sctp", "SCTP", "transport", ("sctp",),
        "an SCTP association from INIT to SHUTDOWN or ABORT: both ends' tags, streams, DATA chunks, "
        "messages, duplicates and payload protocols (its messages are entries of their own protocol)",
    ),
    _row_of(
        "icmp", "ICMP", "network", ("icmp",),
        "an ICMP/ICMPv6 echo and its reply (elapsed = round trip), or an error naming the flow it quotes "
        "(method = unreachable, time_exceeded, packet_too_big, parameter_problem; status = ICMP code; "
        "version 4 or 6)",
    ),
    _row_of(
        "redis", "Redis", "database", ("tcp",),
        "a Redis command and its reply, or a pub/sub push (status 0 ok, 1 MOVED/ASK, -1 error reply)",
        kfl_fields=("redis_command", "redis_key"), status=_DATABASE, span_naming="database",
        system="redis",
    ),
    _row_of(
        "postgresql", "PostgreSQL", "database", ("tcp",),
        "a PostgreSQL query, prepared-statement execution, startup or notification "
        "(status 0 OK; an ErrorResponse is an error whose type, the status text, is its SQLSTATE)",
        kfl_fields=("pg_query", "pg_sqlstate"), status=_POSTGRESQL, span_naming="database",
        system="postgresql",
    ),
    _row_of(
        "mysql", "MySQL", "database", ("tcp",),
        "a MySQL/MariaDB command (COM_QUERY, a prepared statement, the login …) and its OK, ERR or "
        "result set (status 0 OK; an ERR packet is an error whose status is its error code)",
        kfl_fields=("mysql_command", "mysql_query", "mysql_sqlstate"), status=_MYSQL,
        span_naming="database", system="mysql",
    ),
    _row_of(
        "mongodb", "MongoDB", "database", ("tcp",),
        "a MongoDB command (OP_MSG, or legacy OP_QUERY) and its reply, paired by requestID "
        "(status 0 ok; `ok: 0` is an error whose status is its code and whose type is its codeName)",
        kfl_fields=("mongodb_command", "mongodb_database", "mongodb_collection"), status=_MONGODB,
        span_naming="database", system="mongodb",
    ),
    _row_of(
        "kafka", "Kafka", "messaging", ("tcp",),
        "a Kafka request and its response, paired by correlation id (status: the error code, 0 = none)",
        kfl_fields=("kafka_topic", "kafka_topics", "kafka_api_key", "kafka_client_id"),
        status=(StatusRule(("status",), NONZERO, NONZERO, KAFKA_ERRORS, "{name} ({code})", "{name}"),),
        span_naming="messaging", system="kafka",
    ),
    _row_of(
        "amqp", "AMQP 0-9-1", "messaging", ("tcp",),
        "an AMQP 0-9-1 method and its reply (a delivery and its ack; a publish and its confirm)",
        kfl_fields=("amqp_exchange", "amqp_routing_key", "amqp_queue"),
        status=_AMQP, span_naming="messaging", system="rabbitmq",
    ),
    _row_of(
        "ldap", "LDAP", "directory", ("tcp", "udp"),
        "an LDAP operation (bind, search, modify, add, delete, modDN, compare, extended …) and its result, "
        "paired by messageID; CLDAP over UDP too (status: the resultCode; compareFalse, compareTrue, "
        "referral and saslBindInProgress are no error)",
        kfl_fields=(
            "ldap.operation", "ldap.messageID", "ldap.dn", "ldap.filter", "ldap.scope", "ldap.resultCode",
            "ldap.entries", "ldap.oid",
        ),
        status=_LDAP, span_naming="method", system="ldap",
    ),
    _row_of(
        "smtp", "SMTP", "messaging", ("tcp",),
        "an SMTP command and its reply, or the server's greeting (status: the reply code; 4xx and 5xx "
        "are errors); STARTTLS hands the connection to TLS",
        kfl_fields=("smtp.req.command", "smtp.response.code"),
        status=_SMTP, span_naming="method", system="smtp",
    ),
    _row_of(
        "imap", "IMAP", "messaging", ("tcp",),
        "an IMAP command and its tagged completion, with the untagged responses counted, or the "
        "server's greeting (status 0 OK, 1 NO, 2 BAD); STARTTLS hands the connection to TLS",
        kfl_fields=("imap.request.command", "imap.response.status"),
        status=_IMAP, span_naming="method", system="imap",
    ),
    _row_of(
        "pop3", "POP3", "messaging", ("tcp",),
        "a POP3 command and its reply, or the server's greeting (status 0 +OK, 1 -ERR); STLS hands the "
        "connection to TLS",
        kfl_fields=("pop.request.command", "pop.response.indicator"),
        status=_POP3, span_naming="method", system="pop3",
    ),
    _row_of(
        "radius", "RADIUS", "aaa", ("udp",),
        "a RADIUS request (Access, Accounting, Status-Server, CoA, Disconnect) and its answer, paired by "
        "identifier (status: the answer's code; Access-Reject and the NAKs are errors)",
        kfl_fields=(
            "radius_code", "radius_user_name", "radius_nas_identifier", "radius_calling_station_id",
            "radius_acct_status_type", "radius_eap_type",
        ),
        status=_RADIUS, span_naming="method", system="radius",
    ),
    _row_of(
        "diameter", "Diameter", "aaa", ("tcp", "sctp"),
        "a Diameter request and its answer, paired by hop-by-hop and end-to-end id; method the command "
        "(CCR, ULR …), path the application (Gx, S6a …) (status: the Result-Code, else the 3GPP "
        "Experimental-Result-Code; 3000 and above are errors)",
        kfl_fields=(
            "diameter_command_code", "diameter_application_id", "diameter_session_id",
            "diameter_origin_host", "diameter_result_code",
        ),
        status=_DIAMETER, span_naming="messaging", system="diameter",
    ),
    _row_of(
        "tls", "TLS", "tls", ("tcp",),
        'a TLS session (protocol "tls"), or any call that travelled over TLS (has a `tls` object)',
    ),
)  # fmt: skip

PROTOCOLS: Final[Mapping[str, ProtocolInfo]] = MappingProxyType({row.name: row for row in _TABLE})
FAMILIES: Final[tuple[Family, ...]] = (
    "http", "rpc", "messaging", "database", "dns", "directory", "aaa", "tls", "transport", "network"
)  # fmt: skip
_unknown: dict[str, ProtocolInfo] = {}
_CLASSES: Final = {n: f"{n}xx" for n in range(1, 6)}


def _generic(protocol: str) -> ProtocolInfo:
    return ProtocolInfo(protocol, protocol, "transport", (), f"a {protocol} exchange", (), status=_PLAIN)


def info(protocol: str) -> ProtocolInfo:
    """The row of `protocol`; an unknown name (a plugin's, a typo) gets a generic transport row."""
    row = PROTOCOLS.get(protocol)
    if row is not None:
        return row
    row = _unknown.get(protocol)
    if row is None:
        if len(_unknown) >= MAX_UNKNOWN:
            return _generic(protocol)
        row = _unknown[protocol] = _generic(protocol)
    return row


def _row(entry: Mapping[str, Any]) -> ProtocolInfo:
    protocol = entry.get("protocol")
    if type(protocol) is not str or not protocol:
        return PROTOCOLS["tcp"]
    return PROTOCOLS.get(protocol) or info(protocol)


def _code(entry: Mapping[str, Any], row: ProtocolInfo) -> tuple[StatusRule, int] | None:
    """The first rule of the row whose path holds an integer code, and that code."""
    for rule in row.status:
        value: Any = entry
        for key in rule.path:
            if type(value) is not dict:
                value = None
                break
            value = value.get(key)
        if type(value) is int:
            return rule, value
    return None


def _error_type(entry: Mapping[str, Any]) -> str:
    err = entry.get("error")
    if not err:
        return ""
    kind = err.get("type") if type(err) is dict else None
    return kind if type(kind) is str and kind else "error"


def _judge(entry: Mapping[str, Any], server: bool) -> str:
    found = _code(entry, _row(entry))
    if found is not None:
        rule, code = found
        if code in (rule.server_errors if server else rule.client_errors):
            return rule.error_type.format(code=code, name=rule.names.get(code, str(code)))
    return _error_type(entry)


def client_error(entry: Mapping[str, Any]) -> str:
    """The `error.type` the call failed with for its caller; "" when it did not fail for it."""
    return _judge(entry, False)


def server_error(entry: Mapping[str, Any]) -> str:
    """The `error.type` the call failed with through the server's fault; "" when it did not."""
    return _judge(entry, True)


def is_error(entry: Mapping[str, Any]) -> bool:
    """The one answer to "is this entry an error": the server's view (`server_error`). What
    `/api/stats`, the service map, RED metrics and the UI count."""
    return _judge(entry, True) != ""


def status_text(entry: Mapping[str, Any]) -> str:
    """The status as people read it: "200", "UNAVAILABLE (14)", "NXDOMAIN"; else the error type or ""."""
    found = _code(entry, _row(entry))
    if found is None:
        return _error_type(entry)
    rule, code = found
    name = rule.names.get(code)
    if name is None:
        return str(code)
    return rule.text.format(code=code, name=name)


def status_class(entry: Mapping[str, Any], error: bool | None = None) -> str:
    """A bounded label for the outcome: "1xx"…"5xx" where the status reads as an HTTP class, else
    "error" or "ok" (the RED metrics' `status_class`). `error`, when the caller already knows
    `is_error(entry)`, saves working it out again."""
    found = _code(entry, _row(entry))
    if found is not None:
        rule, code = found
        if rule.classes and 100 <= code < 600:
            return _CLASSES[code // 100]
    if error is None:
        error = is_error(entry)
    return "error" if error else "ok"


def family(protocol: str) -> Family:
    return info(protocol).family


@functools.lru_cache(maxsize=MAX_ROUTES)  # a pure function of the path; paths repeat
def route_of(path: str) -> str:
    """The path without its query, with identifier-like segments folded to `{id}`."""
    path = path.split("?", 1)[0] or "/"
    parts = path.split("/")
    # Only segments that start like an id can be one (most are words): the regex runs on those alone.
    return "/".join("{id}" if p and p[0] in _ID_START and _ID_SEGMENT.match(p) else p for p in parts)


def _str(value: Any) -> str:
    return value if type(value) is str else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else {}


def span_name(entry: Mapping[str, Any]) -> str:
    """The span name of a call (semconv): "GET /users/{id}", "pkg.Svc/Method", "DNS A example.com"."""
    row = _row(entry)
    protocol = row.name
    method, path = _str(entry.get("method")), _str(entry.get("path"))
    request = _dict(entry.get("request"))
    naming = row.span_naming
    if naming == "rpc":
        full = path.lstrip("/")
        service, _, rpc_method = full.rpartition("/")
        service = _str(request.get("service")) or service
        rpc_method = _str(request.get("method")) or rpc_method
        name = f"{service}/{rpc_method}" if service else (full or protocol)
    elif naming == "http":
        method = method or _str(request.get("method"))
        full_path = path or _str(request.get("path")) or _str(request.get("url"))
        url_path = full_path.partition("?")[0]
        if method and method not in HTTP_METHODS:
            method = "HTTP"  # semconv http-spans.md#name: an unknown method never names a span
        name = f"{method} {route_of(url_path)}" if method else (url_path or protocol)
    elif naming == "database":
        # database-spans.md#name: `{db.operation.name} {target}`: with a collection the request names,
        # the command as sent (MongoDB's `find orders`); else the command or SQL verb in capitals
        # (`GET`, `SELECT`) — never a Redis key
        collection = _str(request.get("collection"))
        name = (f"{method} {collection}" if collection else method.upper()) if method else protocol
    elif naming == "method":  # the operation alone (RADIUS "Access-Request"): a bounded set of names
        name = method or protocol
    elif naming == "messaging":
        name = f"{method} {path}".strip() or protocol
    elif naming == "dns":
        questions = request.get("questions")
        qname, qtype = path, ""
        if type(questions) is list and questions and type(questions[0]) is dict:
            qname = qname or _str(questions[0].get("name"))
            qtype = _str(questions[0].get("type"))
        name = f"DNS {qtype} {qname}".replace("  ", " ").strip()
    else:
        name = _str(entry.get("summary")) or protocol
    return name[:MAX_NAME_CHARS]


def table_json() -> dict[str, Any]:
    """The table as JSON (GET /api/protocols): the UI reads statuses, errors and families from it."""
    return {
        "protocols": {name: row.to_json() for name, row in PROTOCOLS.items()},
        "default": _generic("unknown").to_json(),
        "families": list(FAMILIES),
    }


__all__ = [
    "DIAMETER_3GPP_RESULT_CODES",
    "DIAMETER_RESULT_CODES",
    "DNS_ERROR_RCODES",
    "DNS_RCODES",
    "FAMILIES",
    "GRPC_CODES",
    "GRPC_SERVER_ERRORS",
    "KAFKA_ERRORS",
    "PROTOCOLS",
    "Codes",
    "Family",
    "ProtocolInfo",
    "SpanNaming",
    "StatusRule",
    "client_error",
    "family",
    "info",
    "is_error",
    "route_of",
    "server_error",
    "span_name",
    "status_class",
    "status_text",
    "table_json",
]
