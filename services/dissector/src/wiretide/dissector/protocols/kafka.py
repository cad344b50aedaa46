"""Apache Kafka (the wire protocol of kafka.apache.org/protocol): requests and responses paired by
correlation id, the common APIs' bodies decoded, record batches read, error codes as the status.

Rule: a response carries only its correlation id, so each flow remembers, per pending correlation id,
the request's API key and version (bounded like the matcher's table) and reads the response with them;
a response whose request was not captured is still framed and paired (by id) but its body is not read.
Every frame is length-prefixed (int32 size); a direction that loses its place (capture started
mid-frame, a gap) finds the next frame again by content — a plausible request header (size, known API
key and version, non-negative correlation id, printable client id) from the client, a size followed by
a pending correlation id from the server — and never by guessing.

Flexible versions (KIP-482) use compact strings, arrays and bytes (unsigned varint length + 1) and end
every structure with tagged fields; which version of each API is the first flexible one is in `APIS`.
Record batches (magic 2) are decoded to topic, partition, base offset, record count, keys, headers and
values (values capped by `SessionConfig.body_cap` per message, records listed up to a cap); message sets
(magic 0 and 1) are counted. gzip is read with zlib, snappy, lz4 and zstd with cramjam when it is
installed; otherwise a batch says "compressed, not decoded" and still counts its records (the count is
in the batch header). SASL authentication bytes are never kept (only their size).
"""

from __future__ import annotations

import base64
import importlib
import struct
import zlib
from typing import Any, Final

from wiretide.common.protocols import KAFKA_ERRORS
from wiretide.dissector.api import Event, Message, Presented, ProtocolSpec, SessionConfig, Verdict, Violation

_cramjam: Any
try:  # snappy, lz4 and zstd record batches; without it such a batch is counted, not listed
    _cramjam = importlib.import_module("cramjam")
except ImportError:  # pragma: no cover - cramjam is a dependency of the dissector
    _cramjam = None

_I32: Final = struct.Struct("!i")
_I64: Final = struct.Struct("!q")
_F64: Final = struct.Struct("!d")
_RESP_HEAD: Final = struct.Struct("!ii")  # size, correlation_id
# Record batch v2 header after base offset and length (KIP-98): leader epoch, magic, crc, attributes,
# last offset delta, first/max timestamp, producer id and epoch, base sequence, record count.
_BATCH: Final = struct.Struct("!ibIhiqqqhii")
_BATCH_HEAD: Final = struct.Struct("!qi")  # base offset, batch length
BATCH_HEADER_LEN: Final = 61

# Kafka's own default `socket.request.max.bytes` (100 MiB): a larger size prefix is not Kafka.
MAX_FRAME: Final = 100 * 1024 * 1024
# Smallest request: size(4) + api key(2) + version(2) + correlation id(4) + client id length(2).
MIN_REQUEST: Final = 14
# Client ids are short names ("rdkafka", "consumer-group-1"); a longer one is not a header.
MAX_CLIENT_ID: Final = 1024
# Bytes of one frame kept for parsing beyond the body cap (topic names, partitions, batch headers come
# before and between record data); the rest of a larger frame is skipped and the message flagged.
FRAME_MARGIN: Final = 1024 * 1024
# Requests remembered for their responses per flow (the matcher's bound, matching.MAX_PENDING).
MAX_PENDING: Final = 256
# Bytes a lost direction may scan for the next frame before the flow is given up as not Kafka.
MAX_RESYNC: Final = 256 * 1024
# Elements of one array listed in an entry (all are still read and counted).
MAX_LISTED: Final = 100
# Array lengths beyond this are a lie (a frame is at most MAX_FRAME bytes, elements several bytes).
MAX_ARRAY: Final = 1_000_000
# Records listed per message (the batch headers count all of them).
MAX_RECORDS_LISTED: Final = 100
# Bytes one compressed batch may inflate to for listing its records (a bomb stops here).
MAX_INFLATE: Final = 4 * 1024 * 1024
# Bytes read at a time while looking for a lost frame boundary.
RESYNC_CHUNK: Final = 64 * 1024
# Topic ids (KIP-516) remembered per flow with their names, learnt from Metadata responses.
MAX_TOPIC_IDS: Final = 4096
_NO_TOPIC_ID: Final = "00000000-0000-0000-0000-000000000000"
SHARED_TOPIC_IDS: Final = "kafka.topic_ids"
# A version this far beyond the newest known one still reads as a Kafka header in detection.
VERSION_SLACK: Final = 2

COMPRESSION: Final = ("none", "gzip", "snappy", "lz4", "zstd")

# api_key: (name, newest known version, first flexible version or None) — Kafka's message JSON files.
APIS: Final[dict[int, tuple[str, int, int | None]]] = {
    0: ("Produce", 13, 9), 1: ("Fetch", 18, 12), 2: ("ListOffsets", 10, 6), 3: ("Metadata", 13, 9),
    4: ("LeaderAndIsr", 7, 4), 5: ("StopReplica", 4, 2), 6: ("UpdateMetadata", 8, 6),
    7: ("ControlledShutdown", 3, 3), 8: ("OffsetCommit", 10, 8), 9: ("OffsetFetch", 10, 6),
    10: ("FindCoordinator", 6, 3), 11: ("JoinGroup", 9, 6), 12: ("Heartbeat", 4, 4),
    13: ("LeaveGroup", 5, 4), 14: ("SyncGroup", 5, 4), 15: ("DescribeGroups", 6, 5),
    16: ("ListGroups", 5, 3), 17: ("SaslHandshake", 1, None), 18: ("ApiVersions", 4, 3),
    19: ("CreateTopics", 7, 5), 20: ("DeleteTopics", 6, 4), 21: ("DeleteRecords", 2, 2),
    22: ("InitProducerId", 6, 2), 23: ("OffsetForLeaderEpoch", 4, 4), 24: ("AddPartitionsToTxn", 5, 3),
    25: ("AddOffsetsToTxn", 4, 3), 26: ("EndTxn", 5, 3), 27: ("WriteTxnMarkers", 2, 1),
    28: ("TxnOffsetCommit", 5, 3), 29: ("DescribeAcls", 3, 2), 30: ("CreateAcls", 3, 2),
    31: ("DeleteAcls", 3, 2), 32: ("DescribeConfigs", 4, 4), 33: ("AlterConfigs", 2, 2),
    34: ("AlterReplicaLogDirs", 2, 2), 35: ("DescribeLogDirs", 4, 2), 36: ("SaslAuthenticate", 2, 2),
    37: ("CreatePartitions", 3, 2), 38: ("CreateDelegationToken", 3, 2),
    39: ("RenewDelegationToken", 2, 2), 40: ("ExpireDelegationToken", 2, 2),
    41: ("DescribeDelegationToken", 3, 2), 42: ("DeleteGroups", 2, 2), 43: ("ElectLeaders", 2, 2),
    44: ("IncrementalAlterConfigs", 1, 1), 45: ("AlterPartitionReassignments", 1, 0),
    46: ("ListPartitionReassignments", 0, 0), 47: ("OffsetDelete", 0, None),
    48: ("DescribeClientQuotas", 1, 1), 49: ("AlterClientQuotas", 1, 1),
    50: ("DescribeUserScramCredentials", 0, 0), 51: ("AlterUserScramCredentials", 0, 0),
    52: ("Vote", 2, 0), 53: ("BeginQuorumEpoch", 1, 1), 54: ("EndQuorumEpoch", 1, 1),
    55: ("DescribeQuorum", 2, 0), 56: ("AlterPartition", 3, 0), 57: ("UpdateFeatures", 2, 0),
    58: ("Envelope", 0, 0), 59: ("FetchSnapshot", 1, 0), 60: ("DescribeCluster", 2, 0),
    61: ("DescribeProducers", 0, 0), 62: ("BrokerRegistration", 4, 0), 63: ("BrokerHeartbeat", 1, 0),
    64: ("UnregisterBroker", 0, 0), 65: ("DescribeTransactions", 0, 0), 66: ("ListTransactions", 2, 0),
    67: ("AllocateProducerIds", 0, 0), 68: ("ConsumerGroupHeartbeat", 1, 0),
    69: ("ConsumerGroupDescribe", 1, 0), 70: ("ControllerRegistration", 0, 0),
    71: ("GetTelemetrySubscriptions", 0, 0), 72: ("PushTelemetry", 0, 0),
    73: ("AssignReplicasToDirs", 0, 0), 74: ("ListConfigResources", 1, 0),
    75: ("DescribeTopicPartitions", 0, 0), 76: ("ShareGroupHeartbeat", 1, 0),
    77: ("ShareGroupDescribe", 1, 0), 78: ("ShareFetch", 1, 0), 79: ("ShareAcknowledge", 1, 0),
    80: ("AddRaftVoter", 0, 0), 81: ("RemoveRaftVoter", 0, 0), 82: ("UpdateRaftVoter", 0, 0),
    83: ("InitializeShareGroupState", 0, 0), 84: ("ReadShareGroupState", 0, 0),
    85: ("WriteShareGroupState", 0, 0), 86: ("DeleteShareGroupState", 0, 0),
    87: ("ReadShareGroupStateSummary", 0, 0), 88: ("StreamsGroupHeartbeat", 0, 0),
    89: ("StreamsGroupDescribe", 0, 0), 90: ("DescribeShareGroupOffsets", 0, 0),
    91: ("AlterShareGroupOffsets", 0, 0), 92: ("DeleteShareGroupOffsets", 0, 0),
}  # fmt: skip
API_VERSIONS: Final = 18  # its response header is always v0, whatever the version (KIP-511)
SASL_AUTHENTICATE: Final = 36
PRODUCE: Final = 0
METADATA: Final = 3

# ---- schemas ------------------------------------------------------------------------------------
# A field: (name, type, first version, last version, sub-fields of a struct array). Types: i8 i16 i32
# i64 f64 bool uuid str bytes records, "[i32]" "[i64]" "[str]" arrays of those, "[]" an array of
# structs. Strings and arrays read as null where the wire says so, whatever the field's nullability.
Field = tuple[str, str, int, int, tuple[Any, ...]]
_ALL: Final = 127


def _f(name: str, typ: str, lo: int = 0, hi: int = _ALL, sub: tuple[Field, ...] = ()) -> Field:
    return (name, typ, lo, hi, sub)


def _topic(lo_id: int) -> tuple[Field, ...]:
    """A topic by name until `lo_id`, by topic id from then on (KIP-516)."""
    return (_f("topic", "str", 0, lo_id - 1), _f("topic_id", "uuid", lo_id))


_PRODUCE_REQ: Final = (
    _f("transactional_id", "str", 3),
    _f("acks", "i16"),
    _f("timeout_ms", "i32"),
    _f("topics", "[]", 0, _ALL, (*_topic(13), _f("partitions", "[]", 0, _ALL, (
        _f("partition", "i32"), _f("records", "records"),
    )))),
)  # fmt: skip
_PRODUCE_RESP: Final = (
    _f("topics", "[]", 0, _ALL, (*_topic(13), _f("partitions", "[]", 0, _ALL, (
        _f("partition", "i32"), _f("error_code", "i16"), _f("base_offset", "i64"),
        _f("log_append_time_ms", "i64", 2), _f("log_start_offset", "i64", 5),
        _f("record_errors", "[]", 8, _ALL, (_f("batch_index", "i32"), _f("message", "str"))),
        _f("error_message", "str", 8),
    )))),
    _f("throttle_time_ms", "i32", 1),
)  # fmt: skip
_FETCH_REQ: Final = (
    _f("replica_id", "i32", 0, 14),
    _f("max_wait_ms", "i32"),
    _f("min_bytes", "i32"),
    _f("max_bytes", "i32", 3),
    _f("isolation_level", "i8", 4),
    _f("session_id", "i32", 7),
    _f("session_epoch", "i32", 7),
    _f("topics", "[]", 0, _ALL, (*_topic(13), _f("partitions", "[]", 0, _ALL, (
        _f("partition", "i32"), _f("current_leader_epoch", "i32", 9), _f("fetch_offset", "i64"),
        _f("last_fetched_epoch", "i32", 12), _f("log_start_offset", "i64", 5),
        _f("partition_max_bytes", "i32"),
    )))),
    _f("forgotten_topics", "[]", 7, _ALL, (*_topic(13), _f("partitions", "[i32]"))),
    _f("rack_id", "str", 11),
)  # fmt: skip
_FETCH_RESP: Final = (
    _f("throttle_time_ms", "i32", 1),
    _f("error_code", "i16", 7),
    _f("session_id", "i32", 7),
    _f("topics", "[]", 0, _ALL, (*_topic(13), _f("partitions", "[]", 0, _ALL, (
        _f("partition", "i32"), _f("error_code", "i16"), _f("high_watermark", "i64"),
        _f("last_stable_offset", "i64", 4), _f("log_start_offset", "i64", 5),
        _f("aborted_transactions", "[]", 4, _ALL, (_f("producer_id", "i64"), _f("first_offset", "i64"))),
        _f("preferred_read_replica", "i32", 11), _f("records", "records"),
    )))),
)  # fmt: skip
_LIST_OFFSETS_REQ: Final = (
    _f("replica_id", "i32"),
    _f("isolation_level", "i8", 2),
    _f("topics", "[]", 0, _ALL, (_f("topic", "str"), _f("partitions", "[]", 0, _ALL, (
        _f("partition", "i32"), _f("current_leader_epoch", "i32", 4), _f("timestamp", "i64"),
        _f("max_num_offsets", "i32", 0, 0),
    )))),
    _f("timeout_ms", "i32", 10),
)  # fmt: skip
_LIST_OFFSETS_RESP: Final = (
    _f("throttle_time_ms", "i32", 2),
    _f("topics", "[]", 0, _ALL, (_f("topic", "str"), _f("partitions", "[]", 0, _ALL, (
        _f("partition", "i32"), _f("error_code", "i16"), _f("old_style_offsets", "[i64]", 0, 0),
        _f("timestamp", "i64", 1), _f("offset", "i64", 1), _f("leader_epoch", "i32", 4),
    )))),
)  # fmt: skip
_METADATA_REQ: Final = (
    _f("topics", "[]", 0, _ALL, (_f("topic_id", "uuid", 10), _f("topic", "str"))),
    _f("allow_auto_topic_creation", "bool", 4),
    _f("include_cluster_authorized_operations", "bool", 8, 10),
    _f("include_topic_authorized_operations", "bool", 8),
)
_METADATA_RESP: Final = (
    _f("throttle_time_ms", "i32", 3),
    _f("brokers", "[]", 0, _ALL, (
        _f("node_id", "i32"), _f("host", "str"), _f("port", "i32"), _f("rack", "str", 1),
    )),
    _f("cluster_id", "str", 2),
    _f("controller_id", "i32", 1),
    _f("topics", "[]", 0, _ALL, (
        _f("error_code", "i16"), _f("topic", "str"), _f("topic_id", "uuid", 10),
        _f("is_internal", "bool", 1),
        _f("partitions", "[]", 0, _ALL, (
            _f("error_code", "i16"), _f("partition", "i32"), _f("leader_id", "i32"),
            _f("leader_epoch", "i32", 7), _f("replica_nodes", "[i32]"), _f("isr_nodes", "[i32]"),
            _f("offline_replicas", "[i32]", 5),
        )),
        _f("topic_authorized_operations", "i32", 8),
    )),
    _f("cluster_authorized_operations", "i32", 8, 10),
    _f("error_code", "i16", 13),
)  # fmt: skip
_OFFSET_COMMIT_REQ: Final = (
    _f("group_id", "str"),
    _f("generation_id", "i32", 1),
    _f("member_id", "str", 1),
    _f("group_instance_id", "str", 7),
    _f("retention_time_ms", "i64", 2, 4),
    _f("topics", "[]", 0, _ALL, (*_topic(10), _f("partitions", "[]", 0, _ALL, (
        _f("partition", "i32"), _f("committed_offset", "i64"), _f("committed_leader_epoch", "i32", 6),
        _f("commit_timestamp", "i64", 1, 1), _f("committed_metadata", "str"),
    )))),
)  # fmt: skip
_OFFSET_COMMIT_RESP: Final = (
    _f("throttle_time_ms", "i32", 3),
    _f("topics", "[]", 0, _ALL, (*_topic(10), _f("partitions", "[]", 0, _ALL, (
        _f("partition", "i32"), _f("error_code", "i16"),
    )))),
)  # fmt: skip
_OFFSET_PARTITION: Final = (
    _f("partition", "i32"), _f("committed_offset", "i64"), _f("committed_leader_epoch", "i32", 5),
    _f("metadata", "str"), _f("error_code", "i16"),
)  # fmt: skip
_OFFSET_FETCH_REQ: Final = (
    _f("group_id", "str", 0, 7),
    _f("topics", "[]", 0, 7, (_f("topic", "str"), _f("partitions", "[i32]"))),
    _f("groups", "[]", 8, _ALL, (
        _f("group_id", "str"), _f("member_id", "str", 9), _f("member_epoch", "i32", 9),
        _f("topics", "[]", 0, _ALL, (*_topic(10), _f("partitions", "[i32]"))),
    )),
    _f("require_stable", "bool", 7),
)  # fmt: skip
_OFFSET_FETCH_RESP: Final = (
    _f("throttle_time_ms", "i32", 3),
    _f("topics", "[]", 0, 7, (_f("topic", "str"), _f("partitions", "[]", 0, _ALL, _OFFSET_PARTITION))),
    _f("error_code", "i16", 2, 7),
    _f("groups", "[]", 8, _ALL, (
        _f("group_id", "str"),
        _f("topics", "[]", 0, _ALL, (*_topic(10), _f("partitions", "[]", 0, _ALL, _OFFSET_PARTITION))),
        _f("error_code", "i16"),
    )),
)  # fmt: skip
_FIND_COORDINATOR_REQ: Final = (
    _f("key", "str", 0, 3), _f("key_type", "i8", 1), _f("coordinator_keys", "[str]", 4),
)  # fmt: skip
_FIND_COORDINATOR_RESP: Final = (
    _f("throttle_time_ms", "i32", 1),
    _f("error_code", "i16", 0, 3),
    _f("error_message", "str", 1, 3),
    _f("node_id", "i32", 0, 3),
    _f("host", "str", 0, 3),
    _f("port", "i32", 0, 3),
    _f("coordinators", "[]", 4, _ALL, (
        _f("key", "str"), _f("node_id", "i32"), _f("host", "str"), _f("port", "i32"),
        _f("error_code", "i16"), _f("error_message", "str"),
    )),
)  # fmt: skip
_JOIN_GROUP_REQ: Final = (
    _f("group_id", "str"),
    _f("session_timeout_ms", "i32"),
    _f("rebalance_timeout_ms", "i32", 1),
    _f("member_id", "str"),
    _f("group_instance_id", "str", 5),
    _f("protocol_type", "str"),
    _f("protocols", "[]", 0, _ALL, (_f("name", "str"), _f("metadata_size", "bytes"))),
    _f("reason", "str", 8),
)
_JOIN_GROUP_RESP: Final = (
    _f("throttle_time_ms", "i32", 2),
    _f("error_code", "i16"),
    _f("generation_id", "i32"),
    _f("protocol_type", "str", 7),
    _f("protocol_name", "str"),
    _f("leader", "str"),
    _f("skip_assignment", "bool", 9),
    _f("member_id", "str"),
    _f("members", "[]", 0, _ALL, (
        _f("member_id", "str"), _f("group_instance_id", "str", 5), _f("metadata_size", "bytes"),
    )),
)  # fmt: skip
_SYNC_GROUP_REQ: Final = (
    _f("group_id", "str"),
    _f("generation_id", "i32"),
    _f("member_id", "str"),
    _f("group_instance_id", "str", 3),
    _f("protocol_type", "str", 5),
    _f("protocol_name", "str", 5),
    _f("assignments", "[]", 0, _ALL, (_f("member_id", "str"), _f("assignment_size", "bytes"))),
)
_SYNC_GROUP_RESP: Final = (
    _f("throttle_time_ms", "i32", 1),
    _f("error_code", "i16"),
    _f("protocol_type", "str", 5),
    _f("protocol_name", "str", 5),
    _f("assignment_size", "bytes"),
)
_HEARTBEAT_REQ: Final = (
    _f("group_id", "str"), _f("generation_id", "i32"), _f("member_id", "str"),
    _f("group_instance_id", "str", 3),
)  # fmt: skip
_THROTTLE_ERROR: Final = (_f("throttle_time_ms", "i32", 1), _f("error_code", "i16"))
_LEAVE_GROUP_REQ: Final = (
    _f("group_id", "str"),
    _f("member_id", "str", 0, 2),
    _f("members", "[]", 3, _ALL, (
        _f("member_id", "str"), _f("group_instance_id", "str"), _f("reason", "str", 5),
    )),
)  # fmt: skip
_LEAVE_GROUP_RESP: Final = (
    _f("throttle_time_ms", "i32", 1),
    _f("error_code", "i16"),
    _f("members", "[]", 3, _ALL, (
        _f("member_id", "str"), _f("group_instance_id", "str"), _f("error_code", "i16"),
    )),
)  # fmt: skip
_LIST_GROUPS_REQ: Final = (_f("states_filter", "[str]", 4), _f("types_filter", "[str]", 5))
_LIST_GROUPS_RESP: Final = (
    _f("throttle_time_ms", "i32", 1),
    _f("error_code", "i16"),
    _f("groups", "[]", 0, _ALL, (
        _f("group_id", "str"), _f("protocol_type", "str"), _f("group_state", "str", 4),
        _f("group_type", "str", 5),
    )),
)  # fmt: skip
_DESCRIBE_GROUPS_REQ: Final = (
    _f("groups", "[str]"), _f("include_authorized_operations", "bool", 3),
)  # fmt: skip
_DESCRIBE_GROUPS_RESP: Final = (
    _f("throttle_time_ms", "i32", 1),
    _f("groups", "[]", 0, _ALL, (
        _f("error_code", "i16"), _f("error_message", "str", 6), _f("group_id", "str"),
        _f("group_state", "str"), _f("protocol_type", "str"), _f("protocol_data", "str"),
        _f("members", "[]", 0, _ALL, (
            _f("member_id", "str"), _f("group_instance_id", "str", 4), _f("client_id", "str"),
            _f("client_host", "str"), _f("member_metadata_size", "bytes"),
            _f("member_assignment_size", "bytes"),
        )),
        _f("authorized_operations", "i32", 3),
    )),
)  # fmt: skip
_SASL_HANDSHAKE_REQ: Final = (_f("mechanism", "str"),)
_SASL_HANDSHAKE_RESP: Final = (_f("error_code", "i16"), _f("mechanisms", "[str]"))
# The authentication bytes (a password, a token) are read as their size only: never kept.
_SASL_AUTH_REQ: Final = (_f("auth_bytes_size", "bytes"),)
_SASL_AUTH_RESP: Final = (
    _f("error_code", "i16"), _f("error_message", "str"), _f("auth_bytes_size", "bytes"),
    _f("session_lifetime_ms", "i64", 1),
)  # fmt: skip
_API_VERSIONS_REQ: Final = (
    _f("client_software_name", "str", 3), _f("client_software_version", "str", 3),
)  # fmt: skip
_API_VERSIONS_RESP: Final = (
    _f("error_code", "i16"),
    _f("api_keys", "[]", 0, _ALL, (
        _f("api_key", "i16"), _f("min_version", "i16"), _f("max_version", "i16"),
    )),
    _f("throttle_time_ms", "i32", 1),
)  # fmt: skip
_CREATE_TOPICS_REQ: Final = (
    _f("topics", "[]", 0, _ALL, (
        _f("topic", "str"), _f("num_partitions", "i32"), _f("replication_factor", "i16"),
        _f("assignments", "[]", 0, _ALL, (_f("partition", "i32"), _f("broker_ids", "[i32]"))),
        _f("configs", "[]", 0, _ALL, (_f("name", "str"), _f("value", "str"))),
    )),
    _f("timeout_ms", "i32"),
    _f("validate_only", "bool", 1),
)  # fmt: skip
_CREATE_TOPICS_RESP: Final = (
    _f("throttle_time_ms", "i32", 2),
    _f("topics", "[]", 0, _ALL, (
        _f("topic", "str"), _f("topic_id", "uuid", 7), _f("error_code", "i16"),
        _f("error_message", "str", 1), _f("num_partitions", "i32", 5),
        _f("replication_factor", "i16", 5),
        _f("configs", "[]", 5, _ALL, (
            _f("name", "str"), _f("value", "str"), _f("read_only", "bool"), _f("config_source", "i8"),
            _f("is_sensitive", "bool"),
        )),
    )),
)  # fmt: skip
_DELETE_TOPICS_REQ: Final = (
    _f("topic_names", "[str]", 0, 5),
    _f("topics", "[]", 6, _ALL, (_f("topic", "str"), _f("topic_id", "uuid"))),
    _f("timeout_ms", "i32"),
)
_DELETE_TOPICS_RESP: Final = (
    _f("throttle_time_ms", "i32", 1),
    _f("topics", "[]", 0, _ALL, (
        _f("topic", "str"), _f("topic_id", "uuid", 6), _f("error_code", "i16"),
        _f("error_message", "str", 5),
    )),
)  # fmt: skip
_INIT_PRODUCER_ID_REQ: Final = (
    _f("transactional_id", "str"), _f("transaction_timeout_ms", "i32"), _f("producer_id", "i64", 3),
    _f("producer_epoch", "i16", 3),
)  # fmt: skip
_INIT_PRODUCER_ID_RESP: Final = (
    _f("throttle_time_ms", "i32"), _f("error_code", "i16"), _f("producer_id", "i64"),
    _f("producer_epoch", "i16"),
)  # fmt: skip

# api_key: (request fields, response fields). An API not here is paired and named, its body not read.
SCHEMAS: Final[dict[int, tuple[tuple[Field, ...], tuple[Field, ...]]]] = {
    0: (_PRODUCE_REQ, _PRODUCE_RESP),
    1: (_FETCH_REQ, _FETCH_RESP),
    2: (_LIST_OFFSETS_REQ, _LIST_OFFSETS_RESP),
    3: (_METADATA_REQ, _METADATA_RESP),
    8: (_OFFSET_COMMIT_REQ, _OFFSET_COMMIT_RESP),
    9: (_OFFSET_FETCH_REQ, _OFFSET_FETCH_RESP),
    10: (_FIND_COORDINATOR_REQ, _FIND_COORDINATOR_RESP),
    11: (_JOIN_GROUP_REQ, _JOIN_GROUP_RESP),
    12: (_HEARTBEAT_REQ, _THROTTLE_ERROR),
    13: (_LEAVE_GROUP_REQ, _LEAVE_GROUP_RESP),
    14: (_SYNC_GROUP_REQ, _SYNC_GROUP_RESP),
    15: (_DESCRIBE_GROUPS_REQ, _DESCRIBE_GROUPS_RESP),
    16: (_LIST_GROUPS_REQ, _LIST_GROUPS_RESP),
    17: (_SASL_HANDSHAKE_REQ, _SASL_HANDSHAKE_RESP),
    18: (_API_VERSIONS_REQ, _API_VERSIONS_RESP),
    19: (_CREATE_TOPICS_REQ, _CREATE_TOPICS_RESP),
    20: (_DELETE_TOPICS_REQ, _DELETE_TOPICS_RESP),
    22: (_INIT_PRODUCER_ID_REQ, _INIT_PRODUCER_ID_RESP),
    36: (_SASL_AUTH_REQ, _SASL_AUTH_RESP),
}


def api_name(api_key: int) -> str:
    api = APIS.get(api_key)
    return api[0] if api is not None else f"ApiKey{api_key}"


def is_flexible(api_key: int, version: int) -> bool:
    """Whether this version of the API uses compact types and tagged fields (KIP-482)."""
    api = APIS.get(api_key)
    return api is not None and api[2] is not None and version >= api[2]


def error_name(code: int) -> str:
    return KAFKA_ERRORS.get(code, str(code))


# ---- primitive reading --------------------------------------------------------------------------


def _i16_at(data: bytes, p: int) -> int:
    """The big-endian int16 at `p` (the caller knows the bytes are there)."""
    v = data[p] << 8 | data[p + 1]
    return v - 0x10000 if v & 0x8000 else v


def _i32_at(data: bytes, p: int) -> int:
    """The big-endian int32 at `p` (the caller knows the bytes are there)."""
    v = data[p] << 24 | data[p + 1] << 16 | data[p + 2] << 8 | data[p + 3]
    return v - 0x100000000 if v & 0x80000000 else v


class KafkaError(ValueError):
    """Malformed bytes (caught inside this module; never escapes)."""


class _Reader:
    """A cursor over one frame's body; reading past the end raises IndexError/struct.error."""

    __slots__ = ("data", "end", "flexible", "pos", "truncated")

    def __init__(self, data: bytes, pos: int, flexible: bool) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)
        self.flexible = flexible
        self.truncated = False

    def need(self, n: int) -> int:
        p = self.pos
        if n < 0 or p + n > self.end:
            raise IndexError("read past the frame")
        self.pos = p + n
        return p

    def i8(self) -> int:
        b = self.data[self.need(1)]
        return b - 0x100 if b & 0x80 else b

    def i16(self) -> int:
        p = self.need(2)
        data = self.data
        v = data[p] << 8 | data[p + 1]
        return v - 0x10000 if v & 0x8000 else v

    def i32(self) -> int:
        p = self.need(4)
        data = self.data
        v = data[p] << 24 | data[p + 1] << 16 | data[p + 2] << 8 | data[p + 3]
        return v - 0x100000000 if v & 0x80000000 else v

    def i64(self) -> int:
        return int(_I64.unpack_from(self.data, self.need(8))[0])

    def f64(self) -> float:
        return float(_F64.unpack_from(self.data, self.need(8))[0])

    def boolean(self) -> bool:
        return self.data[self.need(1)] != 0

    def uuid(self) -> str:
        """The 16 bytes as `str(uuid.UUID(bytes=...))` writes them (8-4-4-4-12 lower-case hex digits)."""
        p = self.need(16)
        h = self.data[p : p + 16].hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def uvarint(self) -> int:
        data, pos, end = self.data, self.pos, self.end
        shift = result = 0
        while True:
            if pos >= end or shift > 28:
                raise IndexError("bad varint")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        self.pos = pos
        return result

    def length(self) -> int:
        """A string/bytes/array length: -1 for null."""
        if self.flexible:
            return self.uvarint() - 1
        return self.i32()

    def string(self) -> str | None:
        n = self.uvarint() - 1 if self.flexible else self.i16()
        if n < 0:
            return None
        p = self.need(n)
        return self.data[p : p + n].decode("utf-8", "replace")

    def blob(self) -> tuple[int, int] | None:
        """(start, declared size) of a bytes field; the bytes may run past a cut frame's end."""
        n = self.length()
        if n < 0:
            return None
        start = self.pos
        if start + n > self.end:
            self.pos = self.end
            self.truncated = True
        else:
            self.pos = start + n
        return start, n

    def array(self) -> int:
        n = self.length()
        if n > MAX_ARRAY:
            raise KafkaError("array length beyond any frame")
        return n

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.need(self.uvarint())


# Field types as read_struct dispatches on them: scalars, then bytes, records, struct arrays; an array
# of scalars is _K_ARRAY + the scalar's kind.
# (Final: compiled code reads them as C constants.)
_K_I8: Final = 0
_K_I16: Final = 1
_K_I32: Final = 2
_K_I64: Final = 3
_K_F64: Final = 4
_K_BOOL: Final = 5
_K_UUID: Final = 6
_K_STR: Final = 7
_K_BYTES: Final = 8
_K_RECORDS: Final = 9
_K_STRUCTS: Final = 10
_K_ARRAY: Final = 16
_SCALAR_KINDS: Final = {
    "i8": _K_I8, "i16": _K_I16, "i32": _K_I32, "i64": _K_I64, "f64": _K_F64, "bool": _K_BOOL,
    "uuid": _K_UUID, "str": _K_STR,
}  # fmt: skip


def _scalar(r: _Reader, kind: int) -> Any:
    if kind == _K_I32:
        return r.i32()
    if kind == _K_I16:
        return r.i16()
    if kind == _K_STR:
        return r.string()
    if kind == _K_I64:
        return r.i64()
    if kind == _K_I8:
        return r.i8()
    if kind == _K_BOOL:
        return r.boolean()
    if kind == _K_UUID:
        return r.uuid()
    return r.f64()


class _Field:
    """One schema field as read_struct uses it (built once from the declarative `Field` tuples)."""

    __slots__ = ("count_name", "hi", "ints", "kind", "lo", "mixed", "name", "sub")

    def __init__(self, field: Field) -> None:
        name, typ, lo, hi, sub = field
        self.name: str = name
        self.count_name: str = name + "_count"
        self.lo: int = lo
        self.hi: int = hi
        if typ == "[]":
            self.kind = _K_STRUCTS
        elif typ == "records":
            self.kind = _K_RECORDS
        elif typ == "bytes":
            self.kind = _K_BYTES
        elif typ[0] == "[":
            self.kind = _K_ARRAY + _SCALAR_KINDS[typ[1:-1]]
        else:
            self.kind = _SCALAR_KINDS[typ]
        self.sub: tuple[_Field, ...] = _fields(sub)
        # A struct array's sub-fields read at a version, as (name, int32?), when all are int16/int32
        # (ApiVersions' keys, most of Metadata's partitions); `mixed`: the versions where they are not.
        # Kept for versions 0.._ALL only (no field is read at any other), so bounded.
        self.ints: dict[int, tuple[tuple[str, bool], ...]] = {}
        self.mixed: set[int] = set()

    def int_plan(self, v: int) -> tuple[tuple[str, bool], ...] | None:
        """The sub-fields read at version `v` when all are int16/int32 (for `_int_items`), else None."""
        plan = self.ints.get(v)
        if plan is not None or v in self.mixed:
            return plan
        active = [g for g in self.sub if g.lo <= v <= g.hi]
        known = 0 <= v <= _ALL
        if any(g.kind not in (_K_I16, _K_I32) for g in active):
            if known:
                self.mixed.add(v)
            return None
        plan = tuple((g.name, g.kind == _K_I32) for g in active)
        if known:
            self.ints[v] = plan
        return plan


def _int_items(r: _Reader, plan: tuple[tuple[str, bool], ...], n: int, items: list[dict[str, Any]]) -> None:
    """`n` structs of int16/int32 fields only, read as read_struct reads them (each listed, up to
    MAX_LISTED, before its fields are read), in one loop with no call per struct."""
    data = r.data
    end = r.end
    flexible = r.flexible
    for i in range(n):
        item: dict[str, Any] = {}
        if i < MAX_LISTED:
            items.append(item)
        p = r.pos
        for name, wide in plan:
            if wide:
                if p + 4 > end:
                    raise IndexError("read past the frame")
                x = data[p] << 24 | data[p + 1] << 16 | data[p + 2] << 8 | data[p + 3]
                item[name] = x - 0x100000000 if x & 0x80000000 else x
                p += 4
            else:
                if p + 2 > end:
                    raise IndexError("read past the frame")
                x = data[p] << 8 | data[p + 1]
                item[name] = x - 0x10000 if x & 0x8000 else x
                p += 2
            r.pos = p
        if flexible:
            r.skip_tags()


def _fields(schema: tuple[Field, ...]) -> tuple[_Field, ...]:
    return tuple(_Field(f) for f in schema)


# SCHEMAS as read_struct reads them.
_READ_SCHEMAS: Final = {key: (_fields(req), _fields(resp)) for key, (req, resp) in SCHEMAS.items()}


def _has_field(fields: tuple[_Field, ...], name: str, v: int) -> bool:
    """Whether a field called `name` is read at version `v`, at any depth."""
    return any(f.lo <= v <= f.hi and (f.name == name or _has_field(f.sub, name, v)) for f in fields)


# (api key, version, request?) as one number -> whether that message may hold a topic named only by
# its id; filled as versions are met, for the schemas' keys and versions 0.._ALL only (so bounded).
_NAMING: Final[dict[int, bool]] = {}


def _names_topic_ids(key: int, version: int, request: bool) -> bool:
    """Whether `_name_topics` can find anything in this message: only a `topic_id` field makes a topic
    without a name, and the schema says at which versions one is read."""
    schema = _READ_SCHEMAS.get(key)
    if schema is None or version < 0 or version > _ALL:
        return False  # nothing is read, or no field is read at such a version
    slot = (key * (_ALL + 1) + version) * 2 + (1 if request else 0)
    found = _NAMING.get(slot)
    if found is None:
        found = _NAMING[slot] = _has_field(schema[0 if request else 1], "topic_id", version)
    return found


def _has_nested(fields: tuple[_Field, ...], name: str) -> bool:
    """Whether a struct inside these fields (at any depth, at any version) has a field called `name`."""
    for f in fields:
        if f.kind == _K_STRUCTS and (any(g.name == name for g in f.sub) or _has_nested(f.sub, name)):
            return True
    return False


# APIs whose responses may hold an error code below the top level (Produce's per partition): only
# these need `first_error`'s walk; any other response's error is its top-level code.
_NESTED_ERRORS: Final = frozenset(
    key for key, (_, resp) in _READ_SCHEMAS.items() if _has_nested(resp, "error_code")
)


class _Budget:
    """What one message may still keep: record values (bytes) and listed records."""

    __slots__ = ("bytes", "records")

    def __init__(self, body_cap: int) -> None:
        self.bytes = body_cap
        self.records = MAX_RECORDS_LISTED


def read_struct(r: _Reader, fields: tuple[_Field, ...], v: int, out: dict[str, Any], budget: _Budget) -> None:
    """Fill `out` field by field (so that a cut frame keeps what was read before the cut)."""
    for f in fields:
        if v < f.lo or v > f.hi:
            continue
        kind = f.kind
        if kind in (_K_I32, _K_I16):  # the most common fields, read in place
            p = r.pos
            data = r.data
            if kind == _K_I32:
                if p + 4 > r.end:
                    raise IndexError("read past the frame")
                x = data[p] << 24 | data[p + 1] << 16 | data[p + 2] << 8 | data[p + 3]
                out[f.name] = x - 0x100000000 if x & 0x80000000 else x
                r.pos = p + 4
            else:
                if p + 2 > r.end:
                    raise IndexError("read past the frame")
                x = data[p] << 8 | data[p + 1]
                out[f.name] = x - 0x10000 if x & 0x8000 else x
                r.pos = p + 2
        elif kind < _K_BYTES:
            out[f.name] = _scalar(r, kind)
        elif kind == _K_STRUCTS:
            n = r.array()
            if n < 0:
                out[f.name] = None
                continue
            items: list[dict[str, Any]] = []
            out[f.name] = items
            if n > MAX_LISTED:
                out[f.count_name] = n
            plan = f.int_plan(v)
            if plan is not None:
                _int_items(r, plan, n, items)
                continue
            sub = f.sub
            for i in range(n):
                item: dict[str, Any] = {}
                if i < MAX_LISTED:
                    items.append(item)
                read_struct(r, sub, v, item, budget)
        elif kind == _K_RECORDS:
            blob = r.blob()
            if blob is not None:
                cut = blob[0] + blob[1] > r.end
                out.update(read_records(r.data, blob[0], min(blob[0] + blob[1], r.end), budget, cut))
                if cut:
                    out["records_truncated"] = True
        elif kind == _K_BYTES:
            blob = r.blob()
            out[f.name] = None if blob is None else blob[1]
        else:
            n = r.array()
            if n < 0:
                out[f.name] = None
                continue
            item_kind = kind - _K_ARRAY
            values = [_scalar(r, item_kind) for _ in range(n)]
            out[f.name] = values[:MAX_LISTED]
    if r.flexible:
        r.skip_tags()


# ---- records (KIP-98 record batches, and the older message sets) --------------------------------


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A zigzag varint (record fields) and the offset after it."""
    shift = result = 0
    while True:
        if pos >= end or shift > 63:
            raise IndexError("bad varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _int64(value: int) -> int:
    """A sum of two int64 fields as the broker computes it (Java's long wraps): never beyond 64 bits."""
    if -0x3FFFFFFFFFFFFFFF <= value <= 0x3FFFFFFFFFFFFFFF:
        return value  # the usual offsets and timestamps: compiled, a comparison of small integers
    if -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
        return value
    return ((value + 0x8000000000000000) & 0xFFFFFFFFFFFFFFFF) - 0x8000000000000000


def _value(data: bytes, start: int, n: int, budget: _Budget) -> Any:
    """Bytes as text when they are UTF-8, else base64; cut to what the message's budget has left."""
    keep = min(n, budget.bytes)
    budget.bytes -= keep
    raw = data[start : start + keep]  # a slice of bytes is bytes
    try:
        text: Any = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = {"base64": base64.b64encode(raw).decode("ascii")}
    return text


def _bytes_field(data: bytes, pos: int, end: int, budget: _Budget) -> tuple[Any, int, int]:
    """(value, declared size, offset after) of a record key/value/header (varint length, -1 = null)."""
    if pos < end and data[pos] < 0x80:  # a one-byte length (see _records_v2)
        b = data[pos]
        n = (b >> 1) ^ -(b & 1)
        pos += 1
    else:
        n, pos = _varint(data, pos, end)
    if n < 0:
        return None, -1, pos
    if pos + n > end:
        raise IndexError("record field runs past the batch")
    return _value(data, pos, n, budget), n, pos + n


def _records_v2(data: bytes, pos: int, end: int, count: int, base: int, ts0: int, budget: _Budget,
                out: list[dict[str, Any]]) -> None:  # fmt: skip
    """Up to the budget's records of one uncompressed batch body (KIP-98 Record)."""
    # A varint of one byte (most lengths and deltas of a record) is read in place: b >> 1 ^ -(b & 1).
    for _ in range(count):
        if budget.records <= 0:
            return
        if pos < end and data[pos] < 0x80:
            b = data[pos]
            length = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            length, pos = _varint(data, pos, end)
        stop = pos + length
        if length < 0 or stop > end:
            return  # the batch was cut: what was read stays
        p = pos + 1  # attributes (unused)
        if p + 1 < stop and data[p] < 0x80 and data[p + 1] < 0x80:
            b = data[p]
            ts_delta = (b >> 1) ^ -(b & 1)
            b = data[p + 1]
            off_delta = (b >> 1) ^ -(b & 1)
            p += 2
        else:
            ts_delta, p = _varint(data, p, stop)
            off_delta, p = _varint(data, p, stop)
        key, key_size, p = _bytes_field(data, p, stop, budget)
        value, value_size, p = _bytes_field(data, p, stop, budget)
        if p < stop and data[p] < 0x80:
            b = data[p]
            n_headers = (b >> 1) ^ -(b & 1)
            p += 1
        else:
            n_headers, p = _varint(data, p, stop)
        headers: list[dict[str, Any]] = []
        for _ in range(max(0, min(n_headers, MAX_LISTED))):
            hk, _, p = _bytes_field(data, p, stop, budget)
            hv, _, p = _bytes_field(data, p, stop, budget)
            headers.append({"key": hk, "value": hv})
        record: dict[str, Any] = {
            "offset": _int64(base + off_delta), "timestamp": _int64(ts0 + ts_delta), "key": key,
            "value": value, "value_size": max(value_size, 0),
        }  # fmt: skip
        if headers:
            record["headers"] = headers
        out.append(record)
        budget.records -= 1
        pos = stop


def _inflate(codec: int, payload: bytes) -> bytes | None:
    """A compressed batch body, at most MAX_INFLATE bytes of it; None when it cannot be read here."""
    if codec == 1:
        d = zlib.decompressobj(47)  # gzip or zlib header, auto-detected
        return d.decompress(payload, MAX_INFLATE)
    if _cramjam is None:
        return None
    try:
        if codec == 2:
            if payload[:8] == b"\x82SNAPPY\x00":  # xerial framing (Java clients): blocks after 16 bytes
                return _xerial(payload)
            return bytes(_cramjam.snappy.decompress_raw(payload))
        if codec == 3:
            return bytes(_cramjam.lz4.decompress(payload))[:MAX_INFLATE]
        if codec == 4:
            return bytes(_cramjam.zstd.decompress(payload))[:MAX_INFLATE]
    except Exception:  # cramjam raises its own DecompressionError on a bad stream
        return None
    return None


def _xerial(payload: bytes) -> bytes | None:
    """Snappy in xerial's framing: a 16-byte header, then (int32 size, raw snappy block) pairs."""
    assert _cramjam is not None
    pos, out = 16, bytearray()
    while pos + 4 <= len(payload) and len(out) < MAX_INFLATE:
        n = _I32.unpack_from(payload, pos)[0]
        if n < 0:
            return None
        out += bytes(_cramjam.snappy.decompress_raw(payload[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return bytes(out)


def read_records(data: bytes, pos: int, end: int, budget: _Budget, cut: bool = False) -> dict[str, Any]:
    """A partition's record set: batches counted, records listed within the budget. A batch running
    past a whole record set is a Fetch response's partial last batch (sent by design, not delivered to
    the consumer): not counted. `cut`: the record set itself was cut short here (a gap, the keep
    limit), so its last batch is whole on the wire and counted from its header."""
    out: dict[str, Any] = {}
    listed: list[dict[str, Any]] = []
    count = batches = 0
    codecs: set[str] = set()
    undecoded = False
    while pos + 17 <= end:
        base_offset, length = _BATCH_HEAD.unpack_from(data, pos)
        magic = data[pos + 16]
        batch_end = pos + 12 + length
        if length < 14:
            break
        if batch_end > end and not cut:
            out["partial_batch"] = True
            break
        if batches == 0:
            out["base_offset"] = base_offset
        if magic == 2:
            if pos + BATCH_HEADER_LEN > end:
                break
            (_, _, _, attrs, _, first_ts, _, producer_id, _, _, n) = _BATCH.unpack_from(data, pos + 12)
            batches += 1
            count += max(n, 0)
            codec = attrs & 0x07
            codecs.add(COMPRESSION[codec] if codec < len(COMPRESSION) else str(codec))
            if attrs & 0x20:
                out["control"] = True
            if attrs & 0x10:
                out["transactional"] = True
            if producer_id >= 0:
                out["producer_id"] = producer_id
            body_start = pos + BATCH_HEADER_LEN
            body_end = min(batch_end, end)
            if budget.records > 0 and body_end > body_start:
                try:
                    if codec == 0:
                        _records_v2(data, body_start, body_end, n, base_offset, first_ts, budget, listed)
                    elif batch_end <= end:
                        inner = _inflate(codec, bytes(data[body_start:batch_end]))
                        if inner is None:
                            undecoded = True
                        else:
                            _records_v2(inner, 0, len(inner), n, base_offset, first_ts, budget, listed)
                    else:
                        undecoded = True
                except (IndexError, struct.error, zlib.error, ValueError):
                    out["records_malformed"] = True
        elif magic in (0, 1):
            batches += 1
            count += _message_set_count(data, pos, min(batch_end, end), magic, codecs)
            out["magic"] = magic
        else:
            out["records_malformed"] = True
            break
        pos = batch_end
    out["record_count"] = count
    out["compression"] = ",".join(sorted(codecs)) if codecs else "none"
    if undecoded:
        out["compressed_not_decoded"] = True
    if listed:
        out["records"] = listed
    return out


def _message_set_count(data: bytes, pos: int, end: int, magic: int, codecs: set[str]) -> int:
    """One message of a v0/v1 message set: 1, or the messages inside a gzip wrapper (counted)."""
    attrs = data[pos + 17] if pos + 17 < end else 0
    codec = attrs & 0x07
    codecs.add(COMPRESSION[codec] if codec < len(COMPRESSION) else str(codec))
    if codec != 1:
        return 1
    p = pos + 18 + (8 if magic == 1 else 0)
    try:
        klen = _I32.unpack_from(data, p)[0]
        p += 4 + max(klen, 0)
        vlen = _I32.unpack_from(data, p)[0]
        inner = zlib.decompressobj(47).decompress(bytes(data[p + 4 : min(p + 4 + vlen, end)]), MAX_INFLATE)
    except (struct.error, zlib.error):
        return 1
    n, q = 0, 0
    while q + 12 <= len(inner):
        size = _I32.unpack_from(inner, q + 8)[0]
        if size < 0 or q + 12 + size > len(inner):
            break
        n += 1
        q += 12 + size
    return max(n, 1)


# ---- headers and detection ----------------------------------------------------------------------


# Printable ASCII, deleted by `bytes.translate`: whatever is left is not printable (one C pass).
_PRINTABLE: Final = bytes(range(32, 127))


def _printable(raw: bytes) -> bool:
    return not raw.translate(None, _PRINTABLE)


def plausible_request(data: bytes, pos: int, strict: bool) -> bool:
    """Whether a request header starts at `pos`: size, known API key and version, non-negative
    correlation id, a printable client id that fits the frame. `strict` (a header found by scanning,
    not at a known boundary) wants a non-empty client id, whole in `data`: every client sets one."""
    end = len(data)
    if pos < 0 or pos + MIN_REQUEST > end:
        return False
    # The header's fields (size, api key, version, correlation id, client id length), read in place.
    api = APIS.get(_i16_at(data, pos + 4))
    size = _i32_at(data, pos)
    if api is None or size < MIN_REQUEST - 4 or size > MAX_FRAME or data[pos + 8] & 0x80:
        return False
    version = _i16_at(data, pos + 6)
    if version < 0 or version > api[1] + VERSION_SLACK:
        return False
    cid = _i16_at(data, pos + 12)
    if cid < -1 or cid > MAX_CLIENT_ID or 10 + max(cid, 0) > size:
        return False
    if strict and cid < 1:
        return False
    if cid > 0:
        start = pos + MIN_REQUEST
        if strict and start + cid > end:
            return False  # the client id is not whole in `data`
        if start < end and not 32 <= data[start] < 127:
            return False  # its first byte is not printable (told before the whole id is looked at)
        if not _printable(data[start : start + cid]):
            return False
    return True


def _chained(data: bytes, pos: int) -> bool:
    """The frame at `pos` ends at the end of `data`, past it, or where another plausible one starts."""
    after = pos + 4 + _I32.unpack_from(data, pos)[0]
    return after + MIN_REQUEST > len(data) or plausible_request(data, after, False)


def find_request(data: bytes, start: int, limit: int) -> int:
    """The first offset in [start, limit) where a plausible request header starts (scanned: strict,
    and chained to the next frame when that one is in `data`), or -1."""
    end = len(data)
    stop = min(limit, end - MIN_REQUEST + 1)
    pos = start
    while pos < stop:
        # Sizes below 16 MiB have a zero first byte, and API keys a zero high byte: jump between those.
        if data[pos] != 0:
            pos = data.find(b"\x00", pos, stop)
            if pos < 0:
                return -1
        # Bytes a strict header must have before it is worth reading (a binary frame is mostly zeros,
        # so most positions end here): a zero high byte of the API key and of the version (both are
        # below 256), a non-negative correlation id, a client id length of 1 to MAX_CLIENT_ID, and
        # the id's first byte there and printable.
        if (
            data[pos + 4] == 0
            and data[pos + 6] == 0
            and data[pos + 8] < 0x80
            and data[pos + 12] <= MAX_CLIENT_ID >> 8
            and (data[pos + 12] != 0 or data[pos + 13] != 0)
            and pos + MIN_REQUEST < end
            and 32 <= data[pos + MIN_REQUEST] < 127
            and plausible_request(data, pos, True)
            and _chained(data, pos)
        ):
            return pos
        pos += 1
    return -1


def probe(client: bytes, server: bytes) -> Verdict:
    """A Kafka request header from the client: at its first byte, or (mid-stream pickup) at a frame
    boundary found by content within the bytes the probes see. A header found by scanning must be
    confirmed — its frame ends where the client's bytes end or where another header starts — since
    any binary protocol holds such bytes somewhere (a server's bytes confirm nothing: an HTTP/2
    stream id or an SMB field reads as a correlation id as well as any). A client
    side that holds no header at its start while the other side does is the other orientation."""
    if len(client) < MIN_REQUEST:
        if not client:
            return Verdict.MAYBE if server and len(server) >= 4 and server[0] == 0 else Verdict.NO
        head = client + bytes(MIN_REQUEST - len(client))
        return Verdict.MAYBE if len(client) < 8 or plausible_request(head, 0, False) else Verdict.NO
    if plausible_request(client, 0, True):
        return Verdict.YES if _chained(client, 0) else Verdict.NO
    if plausible_request(client, 0, False):
        # No client id (rare; zero-filled frames of other protocols look like this): the first frame
        # must end inside the bytes seen, where the bytes end or another header starts.
        after = 4 + _I32.unpack_from(client, 0)[0]
        whole = after == len(client) or plausible_request(client, after, False)
        return Verdict.YES if whole else Verdict.NO
    if plausible_request(server, 0, False):
        return Verdict.NO
    verdict = Verdict.NO
    pos = find_request(client, 1, len(client))
    while pos > 0:
        after = pos + 4 + _I32.unpack_from(client, pos)[0]
        if after == len(client) or plausible_request(client, after, True):
            return Verdict.YES
        if after > len(client):
            verdict = Verdict.MAYBE  # more of the client's bytes may confirm it
        pos = find_request(client, pos + 1, len(client))
    return verdict


# ---- the session ----------------------------------------------------------------------------------


class _Direction:
    """One direction's framing: the current frame's kept bytes, how much of it is still to come."""

    __slots__ = ("buf", "cut", "frame", "scanned", "skip", "synced", "ts")

    def __init__(self) -> None:
        self.buf = bytearray()  # the current frame (size prefix included), up to the keep limit
        self.frame = 0  # its total size (prefix included) once known; 0 = looking for a frame
        self.skip = 0  # bytes of the current frame still to drop (beyond the keep limit)
        self.synced = False  # a frame boundary has been confirmed in this direction
        self.scanned = 0  # bytes dropped while looking for a frame
        self.ts = 0  # capture time of the current frame's first byte
        self.cut = False  # the current frame lost bytes (gap or keep limit)


class KafkaSession:
    """Both directions of one Kafka connection; requests remembered by correlation id for their responses."""

    __slots__ = ("budget_cap", "counters", "dirs", "keep", "pending", "topic_ids")

    def __init__(self, config: SessionConfig) -> None:
        self.budget_cap = config.body_cap
        self.keep = config.body_cap + FRAME_MARGIN
        self.dirs = (_Direction(), _Direction())  # [server, client] as indexed by `from_client`
        # correlation id -> (api key, version, flexible); insertion order = age.
        self.pending: dict[int, tuple[int, int]] = {}
        self.counters = {"resyncs": 0, "skipped_bytes": 0, "unknown_responses": 0}
        # Topic id -> name, from the Metadata responses of every flow of this pipeline: a consumer
        # fetches by id on one connection what Metadata named on another. Ids are random UUIDs.
        ids: dict[str, str] | None = config.shared.get(SHARED_TOPIC_IDS)
        if ids is None:
            ids = config.shared[SHARED_TOPIC_IDS] = {}
        self.topic_ids = ids

    # -- framing

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        d = self.dirs[from_client]
        out: list[Event] = []
        if type(data) is not bytes:
            data = bytes(data)
        view = memoryview(data)
        pos, n = 0, len(data)
        head = MIN_REQUEST if from_client else 8
        low = MIN_REQUEST - 4 if from_client else 4
        while True:
            if not d.frame and not d.skip and not d.buf and n - pos >= head:
                # At a frame boundary (in step, or a first frame `_locate` would take where it is), and
                # a whole frame (within the keep limit) in this segment: read it in place.
                size = data[pos] << 24 | data[pos + 1] << 16 | data[pos + 2] << 8 | data[pos + 3]
                if (
                    low <= size <= MAX_FRAME
                    and size + 4 <= self.keep
                    and pos + size + 4 <= n
                    and (d.synced or self._starts_here(from_client, data, pos))
                ):
                    frame = size + 4
                    raw = data[pos : pos + frame]
                    pos += frame
                    d.scanned = 0
                    d.ts = ts
                    d.synced = True
                    out.append(
                        self._request(raw, frame, False, ts)
                        if from_client
                        else self._response(raw, frame, False, ts)
                    )
                    continue
            if d.skip:  # the rest of a frame beyond the keep limit, or after a hole
                take = min(d.skip, n - pos)
                d.skip -= take
                pos += take
                if d.skip:
                    return out
                self._finish(from_client, d, out)
                continue
            if not d.buf:
                d.ts = ts
            if d.frame == 0:  # looking for where the next frame starts
                if len(d.buf) < head:
                    take = min(head - len(d.buf), n - pos)
                    d.buf += view[pos : pos + take]
                    pos += take
                    if len(d.buf) < head:
                        return out
                at = self._locate(from_client, d)
                if at == 0:
                    d.frame = _I32.unpack_from(d.buf, 0)[0] + 4
                    continue
                # None here: keep only what could still begin one, and read on (bounded per call).
                drop = at if at > 0 else len(d.buf) - head + 1
                del d.buf[:drop]
                d.scanned += drop
                self.counters["skipped_bytes"] += drop
                if d.scanned > MAX_RESYNC:
                    out.append(Violation("kafka: no frame boundary found"))
                    return out
                if at < 0:
                    take = min(RESYNC_CHUNK, n - pos)
                    if not take:
                        return out
                    d.buf += view[pos : pos + take]
                    pos += take
                continue
            target = min(d.frame, self.keep)
            if len(d.buf) < target:
                take = min(target - len(d.buf), n - pos)
                d.buf += view[pos : pos + take]
                pos += take
                if len(d.buf) < target:
                    return out
            rest = b""
            if len(d.buf) > d.frame:  # bytes read ahead while looking for this frame
                rest = bytes(d.buf[d.frame :])
                del d.buf[d.frame :]
            if d.frame > len(d.buf):
                d.skip = d.frame - len(d.buf)
                d.cut = True
                continue
            self._finish(from_client, d, out)
            if rest:
                d.buf += rest

    def _starts_here(self, from_client: bool, data: bytes, pos: int) -> bool:
        """Whether `_locate` would find the first frame of a direction not yet in step at `pos` (it
        sees the header's bytes only: a request's size, key, version, correlation id and client id
        length; a response's correlation id). The size is the caller's to check."""
        if from_client:
            return plausible_request(data[pos : pos + MIN_REQUEST], 0, False)
        corr = data[pos + 4] << 24 | data[pos + 5] << 16 | data[pos + 6] << 8 | data[pos + 7]
        if corr & 0x80000000:
            corr -= 0x100000000
        return corr in self.pending or (not self.pending and corr >= 0)

    def _locate(self, from_client: bool, d: _Direction) -> int:
        """Offset of a frame start in the buffer (0 = here), or -1 for none in what is there."""
        buf = bytes(d.buf)
        if from_client:
            if d.synced:
                size = _I32.unpack_from(buf, 0)[0]
                if MIN_REQUEST - 4 <= size <= MAX_FRAME:
                    return 0  # in step: trust the size (an unknown API key is still a frame)
            elif plausible_request(buf, 0, False):
                return 0
            self.counters["resyncs"] += 1
            return find_request(buf, 1, len(buf))
        size, corr = _RESP_HEAD.unpack_from(buf, 0)
        if 4 <= size <= MAX_FRAME and (d.synced or corr in self.pending or (not self.pending and corr >= 0)):
            return 0
        if not self.pending:
            return -1
        # Lost (or started mid-frame): a size followed by a correlation id a request is waiting for.
        self.counters["resyncs"] += 1
        best = -1
        for corr in self.pending:
            needle = _I32.pack(corr)
            at = buf.find(needle, 1)
            while at >= 4:
                if 4 <= _I32.unpack_from(buf, at - 4)[0] <= MAX_FRAME:
                    if best < 0 or at - 4 < best:
                        best = at - 4
                    break
                at = buf.find(needle, at + 1)
        return best

    def _finish(self, from_client: bool, d: _Direction, out: list[Event]) -> None:
        raw = bytes(d.buf)
        frame, cut, ts = d.frame, d.cut, d.ts
        d.buf = bytearray()
        d.frame = 0
        d.skip = 0  # a hole that ended this frame ended what was left of it to drop, too
        d.cut = False
        d.synced = True
        d.scanned = 0
        if len(raw) < (MIN_REQUEST if from_client else 8):  # no header to name it: never expected
            self.counters["skipped_bytes"] += frame
            return
        msg = self._request(raw, frame, cut, ts) if from_client else self._response(raw, frame, cut, ts)
        out.append(msg)

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        d = self.dirs[from_client]
        out: list[Event] = []
        if d.frame:
            left = d.skip if d.skip else d.frame - len(d.buf)
            d.cut = True
            if size < left:  # the hole is inside this frame: keep its head, drop the rest of it
                d.skip = left - size
                return out
            self._finish(from_client, d, out)
            if size == left:
                return out
        # The hole crosses a frame boundary: find the next frame by content.
        d.buf = bytearray()
        d.frame = d.skip = 0
        d.cut = False
        d.synced = False
        return out

    def close(self, ts: int) -> list[Event]:
        out: list[Event] = []
        for from_client in (True, False):
            d = self.dirs[from_client]
            if d.frame:
                d.cut = True
                self._finish(from_client, d, out)
        return out

    # -- messages

    def _request(self, raw: bytes, frame: int, cut: bool, ts: int) -> Message:
        # The header's key, version and correlation id (a frame here holds at least MIN_REQUEST bytes).
        key = _i16_at(raw, 4)
        version = _i16_at(raw, 6)
        corr = _i32_at(raw, 8)
        api = APIS.get(key)
        name = f"ApiKey{key}" if api is None else api[0]
        first_flexible = None if api is None else api[2]
        flexible = first_flexible is not None and version >= first_flexible
        r = _Reader(raw, 12, False)
        fields: dict[str, Any] = {"api_key": key, "api": name, "api_version": version,
                                  "correlation_id": corr}  # fmt: skip
        budget = _Budget(self.budget_cap)
        try:
            fields["client_id"] = r.string()
            if flexible:
                r.skip_tags()
            schema = _READ_SCHEMAS.get(key)
            if schema is not None:
                r.flexible = flexible
                read_struct(r, schema[0], version, fields, budget)
                if r.pos < r.end and not cut:
                    fields["trailing_bytes"] = r.end - r.pos
        except (IndexError, struct.error, KafkaError, ValueError):
            if not cut:
                fields["malformed"] = True
        truncated = cut or r.truncated
        if truncated:
            fields["truncated"] = True
            if not cut:
                fields["malformed"] = True  # a length ran past a whole frame
        if self.topic_ids and _names_topic_ids(key, version, True):
            self._name_topics(fields)
        # Message's fields in order (a positional call costs less than keywords): is_request, ts_first,
        # ts_last, size, fields, key, standalone, truncated.
        if key == PRODUCE and fields.get("acks") == 0:
            # acks=0: the broker never answers (the request is the whole exchange).
            return Message(True, ts, ts, frame, fields, corr, True, truncated)
        pending = self.pending
        if corr in pending:
            del pending[corr]
        pending[corr] = (key, version)
        if len(pending) > MAX_PENDING:
            del pending[next(iter(pending))]
        return Message(True, ts, ts, frame, fields, corr, False, truncated)

    def _response(self, raw: bytes, frame: int, cut: bool, ts: int) -> Message:
        corr = _i32_at(raw, 4)  # a frame here holds at least 8 bytes
        fields: dict[str, Any] = {"correlation_id": corr}
        waiting = self.pending.pop(corr, None)
        r = _Reader(raw, 8, False)
        if waiting is None:
            self.counters["unknown_responses"] += 1
            if cut:
                fields["truncated"] = True
            return Message(False, ts, ts, frame, fields, corr, False, cut)
        key, version = waiting
        api = APIS.get(key)
        first_flexible = None if api is None else api[2]
        fields["api_key"] = key
        fields["api"] = f"ApiKey{key}" if api is None else api[0]
        fields["api_version"] = version
        flexible = first_flexible is not None and version >= first_flexible
        budget = _Budget(self.budget_cap)
        schema = _READ_SCHEMAS.get(key)
        try:
            if flexible and key != API_VERSIONS:
                r.skip_tags()
            if schema is not None:
                r.flexible = flexible
                start = r.pos
                try:
                    read_struct(r, schema[1], version, fields, budget)
                except (IndexError, struct.error, KafkaError, ValueError):
                    # KIP-511: a broker answers an ApiVersions version it does not know with v0.
                    if key != API_VERSIONS or cut:
                        raise
                    r = _Reader(raw, start, False)
                    read_struct(r, schema[1], 0, fields, budget)
                if r.pos < r.end and not cut:
                    fields["trailing_bytes"] = r.end - r.pos
        except (IndexError, struct.error, KafkaError, ValueError):
            if not cut:
                fields["malformed"] = True
        truncated = cut or r.truncated
        if truncated:
            fields["truncated"] = True
            if not cut:
                fields["malformed"] = True  # a length ran past a whole frame
        if key == METADATA:
            self._learn_topics(fields)
        elif self.topic_ids and _names_topic_ids(key, version, False):
            self._name_topics(fields)
        return Message(False, ts, ts, frame, fields, corr, False, truncated)

    def _learn_topics(self, fields: dict[str, Any]) -> None:
        """Remember the names of the topic ids a Metadata response lists."""
        ids = self.topic_ids
        for t in fields.get("topics") or ():
            tid, name = t.get("topic_id"), t.get("topic")
            if type(tid) is str and type(name) is str and tid != _NO_TOPIC_ID:
                ids[tid] = name
                if len(ids) > MAX_TOPIC_IDS:
                    del ids[next(iter(ids))]

    def _name_topics(self, fields: dict[str, Any]) -> None:
        """Give each topic named only by its id (Fetch v13+, Produce v13+) its name, when known."""
        lists = [fields.get("topics"), fields.get("forgotten_topics")]
        lists.extend(g.get("topics") for g in fields.get("groups") or () if type(g) is dict)
        for items in lists:
            for t in items or ():
                if type(t) is dict and "topic" not in t:
                    name = self.topic_ids.get(t.get("topic_id"))  # type: ignore[arg-type]
                    if name is not None:
                        t["topic"] = name


def first_error(fields: dict[str, Any]) -> int:
    """The response's error: its top-level code if non-zero, else the first non-zero nested one."""
    top = fields.get("error_code")
    if type(top) is int and top:
        return top
    # Breadth first (a list's items before the lists inside them), by index: no list is shifted.
    queue: list[Any] = [v for v in fields.values() if type(v) is list]
    i = 0
    while i < len(queue):
        items = queue[i]
        i += 1
        for item in items:
            if type(item) is not dict:
                continue
            code = item.get("error_code")
            if type(code) is int and code:
                return code
            for v in item.values():
                if type(v) is list:
                    queue.append(v)
    return 0


# ---- presentation -------------------------------------------------------------------------------


def topics_of(fields: dict[str, Any] | None) -> list[str]:
    """Topic names (or ids) a request or response names, in order, without repeats."""
    if not fields:
        return []
    seen: list[str] = []
    names = fields.get("topic_names")
    lists: list[Any] = [fields.get("topics")]
    for group in fields.get("groups") or ():
        if type(group) is dict:
            lists.append(group.get("topics"))
    for items in lists:
        for t in items or ():
            if type(t) is dict:
                name = t.get("topic") or t.get("topic_id")
                if type(name) is str and name not in seen:
                    seen.append(name)
    for name in names or ():
        if type(name) is str and name not in seen:
            seen.append(name)
    return seen


def record_count(fields: dict[str, Any] | None) -> int | None:
    """Records in a Produce request or Fetch response (None when it carries no record sets)."""
    if not fields:
        return None
    total: int | None = None
    for t in fields.get("topics") or ():
        for p in (t.get("partitions") or ()) if type(t) is dict else ():
            if type(p) is dict and "record_count" in p:
                total = (total or 0) + p["record_count"]
    return total


def present(req: Message | None, resp: Message | None) -> Presented:
    rf = req.fields if req is not None else None
    sf = resp.fields if resp is not None else None
    first = rf if rf is not None else sf
    assert first is not None
    corr = str(first.get("correlation_id"))
    api = first.get("api")
    version = first.get("api_version")
    # The status is the response's error (0 = none) where its body was read; unknown otherwise.
    status: int | None = None
    if sf is not None:
        key = sf.get("api_key")
        if key in SCHEMAS and not sf.get("malformed"):  # read
            if key in _NESTED_ERRORS:
                status = first_error(sf)
            else:
                top = sf.get("error_code")
                status = top if type(top) is int and top else 0
    if api is None:
        return Presented(
            method=None, path=None, status=None, stream=corr,
            summary=f"response to correlation id {corr} (request not captured)",
        )  # fmt: skip
    topics = topics_of(rf) or topics_of(sf)
    if topics:
        path = ",".join(topics[:MAX_LISTED])
    else:
        group = (rf or {}).get("group_id") or (rf or {}).get("key")
        path = group if type(group) is str else ""
    summary = f"{api} {path}".rstrip()
    count = record_count(rf) if api == "Produce" else record_count(sf) if api == "Fetch" else None
    if count is not None:
        summary += f" ({count} record{'' if count == 1 else 's'})"
    if type(status) is int and status:
        summary += f" → {error_name(status)}"
    # In field order (method, path, status, summary, version, stream): cheaper than keywords.
    return Presented(api, path, status, summary, str(version) if version is not None else None, corr)


SPEC: Final = ProtocolSpec(
    name="kafka",
    transports=("tcp",),
    ports=(9092, 9093, 9094, 29092),
    probe=probe,
    session=KafkaSession,
    present=present,
    matcher="key",
)
