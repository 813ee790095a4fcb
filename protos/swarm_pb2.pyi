from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reachability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REACHABILITY_UNSPECIFIED: _ClassVar[Reachability]
    REACHABILITY_DIRECT: _ClassVar[Reachability]
    REACHABILITY_RELAYED: _ClassVar[Reachability]

class AdmissionAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADMISSION_ACTION_UNSPECIFIED: _ClassVar[AdmissionAction]
    ADMIT: _ClassVar[AdmissionAction]
    BAN: _ClassVar[AdmissionAction]
    FORGET: _ClassVar[AdmissionAction]

class PeerHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PEER_HEALTH_UNSPECIFIED: _ClassVar[PeerHealth]
    PEER_HEALTH_ONLINE: _ClassVar[PeerHealth]
    PEER_HEALTH_JOINING: _ClassVar[PeerHealth]
    PEER_HEALTH_BEHIND: _ClassVar[PeerHealth]
    PEER_HEALTH_UNREACHABLE: _ClassVar[PeerHealth]
    PEER_HEALTH_GONE: _ClassVar[PeerHealth]

class SwarmEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SWARM_EVENT_KIND_UNSPECIFIED: _ClassVar[SwarmEventKind]
    ROUND_COMPLETED: _ClassVar[SwarmEventKind]
    ROUND_SKIPPED: _ClassVar[SwarmEventKind]
    PEER_JOINED: _ClassVar[SwarmEventKind]
    PEER_LEFT: _ClassVar[SwarmEventKind]
    RECORD_REJECTED: _ClassVar[SwarmEventKind]
REACHABILITY_UNSPECIFIED: Reachability
REACHABILITY_DIRECT: Reachability
REACHABILITY_RELAYED: Reachability
ADMISSION_ACTION_UNSPECIFIED: AdmissionAction
ADMIT: AdmissionAction
BAN: AdmissionAction
FORGET: AdmissionAction
PEER_HEALTH_UNSPECIFIED: PeerHealth
PEER_HEALTH_ONLINE: PeerHealth
PEER_HEALTH_JOINING: PeerHealth
PEER_HEALTH_BEHIND: PeerHealth
PEER_HEALTH_UNREACHABLE: PeerHealth
PEER_HEALTH_GONE: PeerHealth
SWARM_EVENT_KIND_UNSPECIFIED: SwarmEventKind
ROUND_COMPLETED: SwarmEventKind
ROUND_SKIPPED: SwarmEventKind
PEER_JOINED: SwarmEventKind
PEER_LEFT: SwarmEventKind
RECORD_REJECTED: SwarmEventKind
RULE_FIELD_NUMBER: _ClassVar[int]
rule: _descriptor.FieldDescriptor
RECORD_FIELD_NUMBER: _ClassVar[int]
record: _descriptor.FieldDescriptor

class FieldRule(_message.Message):
    __slots__ = ("min", "max", "max_len", "min_items", "max_items", "run_id", "required", "non_decreasing", "allowed", "since", "open_enum")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    MIN_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    NON_DECREASING_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    OPEN_ENUM_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    max_len: int
    min_items: int
    max_items: int
    run_id: bool
    required: bool
    non_decreasing: bool
    allowed: _containers.RepeatedScalarFieldContainer[str]
    since: int
    open_enum: bool
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ..., max_len: _Optional[int] = ..., min_items: _Optional[int] = ..., max_items: _Optional[int] = ..., run_id: _Optional[bool] = ..., required: _Optional[bool] = ..., non_decreasing: _Optional[bool] = ..., allowed: _Optional[_Iterable[str]] = ..., since: _Optional[int] = ..., open_enum: _Optional[bool] = ...) -> None: ...

class RecordRule(_message.Message):
    __slots__ = ("latest_schema", "invariant")
    LATEST_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    INVARIANT_FIELD_NUMBER: _ClassVar[int]
    latest_schema: int
    invariant: str
    def __init__(self, latest_schema: _Optional[int] = ..., invariant: _Optional[str] = ...) -> None: ...

class IndicatorMoments(_message.Message):
    __slots__ = ("count", "sum", "sumsq")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    SUMSQ_FIELD_NUMBER: _ClassVar[int]
    count: int
    sum: float
    sumsq: float
    def __init__(self, count: _Optional[int] = ..., sum: _Optional[float] = ..., sumsq: _Optional[float] = ...) -> None: ...

class SignalStats(_message.Message):
    __slots__ = ("er", "erv", "era", "score", "gate_sum", "gate_count")
    ER_FIELD_NUMBER: _ClassVar[int]
    ERV_FIELD_NUMBER: _ClassVar[int]
    ERA_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    GATE_SUM_FIELD_NUMBER: _ClassVar[int]
    GATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    er: IndicatorMoments
    erv: IndicatorMoments
    era: IndicatorMoments
    score: IndicatorMoments
    gate_sum: float
    gate_count: int
    def __init__(self, er: _Optional[_Union[IndicatorMoments, _Mapping]] = ..., erv: _Optional[_Union[IndicatorMoments, _Mapping]] = ..., era: _Optional[_Union[IndicatorMoments, _Mapping]] = ..., score: _Optional[_Union[IndicatorMoments, _Mapping]] = ..., gate_sum: _Optional[float] = ..., gate_count: _Optional[int] = ...) -> None: ...

class MetaSignal(_message.Message):
    __slots__ = ("schema_version", "run_id", "peer_id", "step", "stats", "mean_gate", "num_rollouts", "num_tokens", "published_at")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    MEAN_GATE_FIELD_NUMBER: _ClassVar[int]
    NUM_ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    run_id: str
    peer_id: str
    step: int
    stats: SignalStats
    mean_gate: float
    num_rollouts: int
    num_tokens: int
    published_at: float
    def __init__(self, schema_version: _Optional[int] = ..., run_id: _Optional[str] = ..., peer_id: _Optional[str] = ..., step: _Optional[int] = ..., stats: _Optional[_Union[SignalStats, _Mapping]] = ..., mean_gate: _Optional[float] = ..., num_rollouts: _Optional[int] = ..., num_tokens: _Optional[int] = ..., published_at: _Optional[float] = ...) -> None: ...

class EmaState(_message.Message):
    __slots__ = ("raw", "updates")
    RAW_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    raw: float
    updates: int
    def __init__(self, raw: _Optional[float] = ..., updates: _Optional[int] = ...) -> None: ...

class Baselines(_message.Message):
    __slots__ = ("er", "erv", "era", "score", "ready", "er_state", "erv_state", "era_state", "score_state", "alpha", "bias_corrected")
    ER_FIELD_NUMBER: _ClassVar[int]
    ERV_FIELD_NUMBER: _ClassVar[int]
    ERA_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ER_STATE_FIELD_NUMBER: _ClassVar[int]
    ERV_STATE_FIELD_NUMBER: _ClassVar[int]
    ERA_STATE_FIELD_NUMBER: _ClassVar[int]
    SCORE_STATE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BIAS_CORRECTED_FIELD_NUMBER: _ClassVar[int]
    er: float
    erv: float
    era: float
    score: float
    ready: bool
    er_state: EmaState
    erv_state: EmaState
    era_state: EmaState
    score_state: EmaState
    alpha: float
    bias_corrected: bool
    def __init__(self, er: _Optional[float] = ..., erv: _Optional[float] = ..., era: _Optional[float] = ..., score: _Optional[float] = ..., ready: _Optional[bool] = ..., er_state: _Optional[_Union[EmaState, _Mapping]] = ..., erv_state: _Optional[_Union[EmaState, _Mapping]] = ..., era_state: _Optional[_Union[EmaState, _Mapping]] = ..., score_state: _Optional[_Union[EmaState, _Mapping]] = ..., alpha: _Optional[float] = ..., bias_corrected: _Optional[bool] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("mean_gate", "explore_share", "exploit_share")
    MEAN_GATE_FIELD_NUMBER: _ClassVar[int]
    EXPLORE_SHARE_FIELD_NUMBER: _ClassVar[int]
    EXPLOIT_SHARE_FIELD_NUMBER: _ClassVar[int]
    mean_gate: float
    explore_share: float
    exploit_share: float
    def __init__(self, mean_gate: _Optional[float] = ..., explore_share: _Optional[float] = ..., exploit_share: _Optional[float] = ...) -> None: ...

class BalanceWeights(_message.Message):
    __slots__ = ("schema_version", "run_id", "round", "baselines", "lambda_t", "balance", "merged", "num_peers", "num_contributions", "issued_at", "coordinator_key")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BASELINES_FIELD_NUMBER: _ClassVar[int]
    LAMBDA_T_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    MERGED_FIELD_NUMBER: _ClassVar[int]
    NUM_PEERS_FIELD_NUMBER: _ClassVar[int]
    NUM_CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_KEY_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    run_id: str
    round: int
    baselines: Baselines
    lambda_t: float
    balance: Balance
    merged: SignalStats
    num_peers: int
    num_contributions: int
    issued_at: float
    coordinator_key: str
    def __init__(self, schema_version: _Optional[int] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., baselines: _Optional[_Union[Baselines, _Mapping]] = ..., lambda_t: _Optional[float] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., merged: _Optional[_Union[SignalStats, _Mapping]] = ..., num_peers: _Optional[int] = ..., num_contributions: _Optional[int] = ..., issued_at: _Optional[float] = ..., coordinator_key: _Optional[str] = ...) -> None: ...

class Deciles(_message.Message):
    __slots__ = ("count", "values")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    count: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, count: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class PeerStatus(_message.Message):
    __slots__ = ("schema_version", "run_id", "peer_id", "version", "address", "reachability", "step", "throughput", "bytes_sent", "bytes_received", "reported_at", "tokens_per_s", "step_seconds", "compression_ratio", "reward", "accuracy", "heldout_accuracy", "kl", "er", "erv", "era", "gate", "aux", "epoch", "num_peers_seen", "averaging_rounds", "averaging_failures", "last_averaging_error", "publish_failures", "baselines_source", "balance_round", "er_deciles", "erv_deciles", "era_deciles", "staleness", "gradient_bytes_sent", "gradient_bytes_received", "state_averaging_bytes_sent", "state_averaging_bytes_received", "state_bytes_served", "state_bytes_downloaded")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REACHABILITY_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    STEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_RATIO_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    KL_FIELD_NUMBER: _ClassVar[int]
    ER_FIELD_NUMBER: _ClassVar[int]
    ERV_FIELD_NUMBER: _ClassVar[int]
    ERA_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    AUX_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    NUM_PEERS_SEEN_FIELD_NUMBER: _ClassVar[int]
    AVERAGING_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    AVERAGING_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_AVERAGING_ERROR_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    BASELINES_SOURCE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_ROUND_FIELD_NUMBER: _ClassVar[int]
    ER_DECILES_FIELD_NUMBER: _ClassVar[int]
    ERV_DECILES_FIELD_NUMBER: _ClassVar[int]
    ERA_DECILES_FIELD_NUMBER: _ClassVar[int]
    STALENESS_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    STATE_AVERAGING_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    STATE_AVERAGING_BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    STATE_BYTES_SERVED_FIELD_NUMBER: _ClassVar[int]
    STATE_BYTES_DOWNLOADED_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    run_id: str
    peer_id: str
    version: str
    address: str
    reachability: Reachability
    step: int
    throughput: float
    bytes_sent: int
    bytes_received: int
    reported_at: float
    tokens_per_s: float
    step_seconds: float
    compression_ratio: float
    reward: float
    accuracy: float
    heldout_accuracy: float
    kl: float
    er: float
    erv: float
    era: float
    gate: float
    aux: float
    epoch: int
    num_peers_seen: int
    averaging_rounds: int
    averaging_failures: int
    last_averaging_error: str
    publish_failures: int
    baselines_source: str
    balance_round: int
    er_deciles: Deciles
    erv_deciles: Deciles
    era_deciles: Deciles
    staleness: int
    gradient_bytes_sent: int
    gradient_bytes_received: int
    state_averaging_bytes_sent: int
    state_averaging_bytes_received: int
    state_bytes_served: int
    state_bytes_downloaded: int
    def __init__(self, schema_version: _Optional[int] = ..., run_id: _Optional[str] = ..., peer_id: _Optional[str] = ..., version: _Optional[str] = ..., address: _Optional[str] = ..., reachability: _Optional[_Union[Reachability, str]] = ..., step: _Optional[int] = ..., throughput: _Optional[float] = ..., bytes_sent: _Optional[int] = ..., bytes_received: _Optional[int] = ..., reported_at: _Optional[float] = ..., tokens_per_s: _Optional[float] = ..., step_seconds: _Optional[float] = ..., compression_ratio: _Optional[float] = ..., reward: _Optional[float] = ..., accuracy: _Optional[float] = ..., heldout_accuracy: _Optional[float] = ..., kl: _Optional[float] = ..., er: _Optional[float] = ..., erv: _Optional[float] = ..., era: _Optional[float] = ..., gate: _Optional[float] = ..., aux: _Optional[float] = ..., epoch: _Optional[int] = ..., num_peers_seen: _Optional[int] = ..., averaging_rounds: _Optional[int] = ..., averaging_failures: _Optional[int] = ..., last_averaging_error: _Optional[str] = ..., publish_failures: _Optional[int] = ..., baselines_source: _Optional[str] = ..., balance_round: _Optional[int] = ..., er_deciles: _Optional[_Union[Deciles, _Mapping]] = ..., erv_deciles: _Optional[_Union[Deciles, _Mapping]] = ..., era_deciles: _Optional[_Union[Deciles, _Mapping]] = ..., staleness: _Optional[int] = ..., gradient_bytes_sent: _Optional[int] = ..., gradient_bytes_received: _Optional[int] = ..., state_averaging_bytes_sent: _Optional[int] = ..., state_averaging_bytes_received: _Optional[int] = ..., state_bytes_served: _Optional[int] = ..., state_bytes_downloaded: _Optional[int] = ...) -> None: ...

class WeightsClaim(_message.Message):
    __slots__ = ("schema_version", "run_id", "peer_id", "epoch", "fingerprint", "published_at")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    run_id: str
    peer_id: str
    epoch: int
    fingerprint: _containers.RepeatedScalarFieldContainer[float]
    published_at: float
    def __init__(self, schema_version: _Optional[int] = ..., run_id: _Optional[str] = ..., peer_id: _Optional[str] = ..., epoch: _Optional[int] = ..., fingerprint: _Optional[_Iterable[float]] = ..., published_at: _Optional[float] = ...) -> None: ...

class Admission(_message.Message):
    __slots__ = ("schema_version", "run_id", "closed", "admitted", "banned", "version", "issued_at", "coordinator_key")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_KEY_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    run_id: str
    closed: bool
    admitted: _containers.RepeatedScalarFieldContainer[str]
    banned: _containers.RepeatedScalarFieldContainer[str]
    version: int
    issued_at: float
    coordinator_key: str
    def __init__(self, schema_version: _Optional[int] = ..., run_id: _Optional[str] = ..., closed: _Optional[bool] = ..., admitted: _Optional[_Iterable[str]] = ..., banned: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ..., issued_at: _Optional[float] = ..., coordinator_key: _Optional[str] = ...) -> None: ...

class SetAdmissionRequest(_message.Message):
    __slots__ = ("schema_version", "peer_id", "action")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    peer_id: str
    action: AdmissionAction
    def __init__(self, schema_version: _Optional[int] = ..., peer_id: _Optional[str] = ..., action: _Optional[_Union[AdmissionAction, str]] = ...) -> None: ...

class PeerState(_message.Message):
    __slots__ = ("peer_id", "first_seen", "last_seen", "last_step", "num_contributions", "active", "status", "health", "version_mismatch", "epoch_lag")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    NUM_CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    VERSION_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_LAG_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    first_seen: float
    last_seen: float
    last_step: int
    num_contributions: int
    active: bool
    status: PeerStatus
    health: PeerHealth
    version_mismatch: bool
    epoch_lag: int
    def __init__(self, peer_id: _Optional[str] = ..., first_seen: _Optional[float] = ..., last_seen: _Optional[float] = ..., last_step: _Optional[int] = ..., num_contributions: _Optional[int] = ..., active: _Optional[bool] = ..., status: _Optional[_Union[PeerStatus, _Mapping]] = ..., health: _Optional[_Union[PeerHealth, str]] = ..., version_mismatch: _Optional[bool] = ..., epoch_lag: _Optional[int] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("key", "kind", "severity", "peer_id", "message", "started_at", "started_round", "ended_at", "ended_round")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_ROUND_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_ROUND_FIELD_NUMBER: _ClassVar[int]
    key: str
    kind: str
    severity: str
    peer_id: str
    message: str
    started_at: float
    started_round: int
    ended_at: float
    ended_round: int
    def __init__(self, key: _Optional[str] = ..., kind: _Optional[str] = ..., severity: _Optional[str] = ..., peer_id: _Optional[str] = ..., message: _Optional[str] = ..., started_at: _Optional[float] = ..., started_round: _Optional[int] = ..., ended_at: _Optional[float] = ..., ended_round: _Optional[int] = ...) -> None: ...

class SwarmEvent(_message.Message):
    __slots__ = ("schema_version", "seq", "kind", "at", "round", "peer_id", "detail", "weights")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    seq: int
    kind: SwarmEventKind
    at: float
    round: int
    peer_id: str
    detail: str
    weights: BalanceWeights
    def __init__(self, schema_version: _Optional[int] = ..., seq: _Optional[int] = ..., kind: _Optional[_Union[SwarmEventKind, str]] = ..., at: _Optional[float] = ..., round: _Optional[int] = ..., peer_id: _Optional[str] = ..., detail: _Optional[str] = ..., weights: _Optional[_Union[BalanceWeights, _Mapping]] = ...) -> None: ...

class RoundRecord(_message.Message):
    __slots__ = ("weights", "contributions")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    weights: BalanceWeights
    contributions: _containers.RepeatedCompositeFieldContainer[MetaSignal]
    def __init__(self, weights: _Optional[_Union[BalanceWeights, _Mapping]] = ..., contributions: _Optional[_Iterable[_Union[MetaSignal, _Mapping]]] = ...) -> None: ...

class GetBalanceWeightsRequest(_message.Message):
    __slots__ = ("schema_version",)
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    def __init__(self, schema_version: _Optional[int] = ...) -> None: ...

class GetBalanceWeightsResponse(_message.Message):
    __slots__ = ("schema_version", "available", "weights")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    available: bool
    weights: BalanceWeights
    def __init__(self, schema_version: _Optional[int] = ..., available: _Optional[bool] = ..., weights: _Optional[_Union[BalanceWeights, _Mapping]] = ...) -> None: ...

class GetSwarmStateRequest(_message.Message):
    __slots__ = ("schema_version",)
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    def __init__(self, schema_version: _Optional[int] = ...) -> None: ...

class SwarmState(_message.Message):
    __slots__ = ("schema_version", "run_id", "coordinator_key", "round", "latest", "peers", "visible_maddrs", "now", "alerts", "coordinator_version", "http_address", "records_rejected", "rejected_by_rule", "admission")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_KEY_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_MADDRS_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BY_RULE_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    run_id: str
    coordinator_key: str
    round: int
    latest: BalanceWeights
    peers: _containers.RepeatedCompositeFieldContainer[PeerState]
    visible_maddrs: _containers.RepeatedScalarFieldContainer[str]
    now: float
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    coordinator_version: str
    http_address: str
    records_rejected: int
    rejected_by_rule: _containers.RepeatedCompositeFieldContainer[RejectionCount]
    admission: Admission
    def __init__(self, schema_version: _Optional[int] = ..., run_id: _Optional[str] = ..., coordinator_key: _Optional[str] = ..., round: _Optional[int] = ..., latest: _Optional[_Union[BalanceWeights, _Mapping]] = ..., peers: _Optional[_Iterable[_Union[PeerState, _Mapping]]] = ..., visible_maddrs: _Optional[_Iterable[str]] = ..., now: _Optional[float] = ..., alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ..., coordinator_version: _Optional[str] = ..., http_address: _Optional[str] = ..., records_rejected: _Optional[int] = ..., rejected_by_rule: _Optional[_Iterable[_Union[RejectionCount, _Mapping]]] = ..., admission: _Optional[_Union[Admission, _Mapping]] = ...) -> None: ...

class RejectionCount(_message.Message):
    __slots__ = ("rule", "count")
    RULE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    rule: str
    count: int
    def __init__(self, rule: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class WatchSwarmEventsRequest(_message.Message):
    __slots__ = ("schema_version", "after_seq")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    after_seq: int
    def __init__(self, schema_version: _Optional[int] = ..., after_seq: _Optional[int] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("schema_version", "first_round", "last_round", "max_rounds", "include_contributions")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    FIRST_ROUND_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    first_round: int
    last_round: int
    max_rounds: int
    include_contributions: bool
    def __init__(self, schema_version: _Optional[int] = ..., first_round: _Optional[int] = ..., last_round: _Optional[int] = ..., max_rounds: _Optional[int] = ..., include_contributions: _Optional[bool] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("schema_version", "rounds")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    rounds: _containers.RepeatedCompositeFieldContainer[RoundRecord]
    def __init__(self, schema_version: _Optional[int] = ..., rounds: _Optional[_Iterable[_Union[RoundRecord, _Mapping]]] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("schema_version", "maddrs")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    MADDRS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    maddrs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, schema_version: _Optional[int] = ..., maddrs: _Optional[_Iterable[str]] = ...) -> None: ...

class ProbeReply(_message.Message):
    __slots__ = ("schema_version", "now", "version", "dialed", "dial_error")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIALED_FIELD_NUMBER: _ClassVar[int]
    DIAL_ERROR_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    now: float
    version: str
    dialed: bool
    dial_error: str
    def __init__(self, schema_version: _Optional[int] = ..., now: _Optional[float] = ..., version: _Optional[str] = ..., dialed: _Optional[bool] = ..., dial_error: _Optional[str] = ...) -> None: ...
