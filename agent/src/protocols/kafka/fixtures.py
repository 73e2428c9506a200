"""Kafka frames as kafka-python 3.0's own encoders write them (the unit tests' fixtures)."""
import uuid
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from kafka.protocol.consumer import FetchResponse
from kafka.protocol.metadata import MetadataResponse
from kafka.record.default_records import DefaultRecordBatchBuilder

TP = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

def batch(records, base=0):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, (key, value, headers) in enumerate(records):
        b.append(i, timestamp=1700000000000 + i, key=key, value=value, headers=headers)
    buf = bytearray(b.build())
    buf[0:8] = base.to_bytes(8, 'big')
    return bytes(buf)

RECORDS = [(b"order-7", b'{"order": 7}', [("traceparent", TP)]), (None, b'{"order": 8}', [])]

def produce(version, corr):
    T = ProduceRequest.TopicProduceData
    P = T.PartitionProduceData
    r = ProduceRequest(transactional_id=None, acks=-1, timeout_ms=30000, topic_data=[T(name="orders", partition_data=[P(index=2, records=batch(RECORDS))])])
    r.with_header(correlation_id=corr, client_id="kafka-python-producer-1")
    return r.encode(version=version, header=True, framed=True)

def produce_response(version, corr, error):
    T = ProduceResponse.TopicProduceResponse
    P = T.PartitionProduceResponse
    r = ProduceResponse(responses=[T(name="orders", partition_responses=[P(index=2, error_code=error, base_offset=41, log_append_time_ms=-1, log_start_offset=0)])], throttle_time_ms=0)
    return corr.to_bytes(4, 'big') + (b"\x00" if version >= 9 else b"") + r.encode(version=version)

def fetch_response(version, corr, topic_id=None):
    T = FetchResponse.FetchableTopicResponse
    P = T.PartitionData
    kw = dict(topic_id=topic_id) if topic_id else dict(topic="orders")
    r = FetchResponse(throttle_time_ms=0, error_code=0, session_id=0, responses=[T(partitions=[P(partition_index=2, error_code=0, high_watermark=43, last_stable_offset=43, log_start_offset=0, aborted_transactions=None, preferred_read_replica=-1, records=batch(RECORDS, base=41))], **kw)])
    return corr.to_bytes(4, 'big') + (b"\x00" if version >= 12 else b"") + r.encode(version=version)

def metadata_response(version, corr, topic_id):
    T = MetadataResponse.MetadataResponseTopic
    P = T.MetadataResponsePartition
    B = MetadataResponse.MetadataResponseBroker
    r = MetadataResponse(throttle_time_ms=0, brokers=[B(node_id=0, host="127.0.0.1", port=9092, rack=None)], cluster_id="c", controller_id=0,
        topics=[T(error_code=0, name="orders", topic_id=topic_id, is_internal=False, partitions=[P(error_code=0, partition_index=2, leader_id=0, leader_epoch=0, replica_nodes=[0], isr_nodes=[0], offline_replicas=[])], authorized_operations=-2147483648) if False else T(error_code=0, name="orders", topic_id=topic_id, is_internal=False, partitions=[P(error_code=0, partition_index=2, leader_id=0, leader_epoch=0, replica_nodes=[0], isr_nodes=[0], offline_replicas=[])])])
    return corr.to_bytes(4, 'big') + (b"\x00" if version >= 9 else b"") + r.encode(version=version)

def frame(b):
    return len(b).to_bytes(4, 'big') + b

def fetch_request(version, corr, topic_id=None):
    from kafka.protocol.consumer import FetchRequest
    T = FetchRequest.FetchTopic
    P = T.FetchPartition
    kw = dict(topic_id=topic_id) if topic_id else dict(topic="orders")
    r = FetchRequest(replica_id=-1, max_wait_ms=500, min_bytes=1, max_bytes=52428800, isolation_level=0, session_id=0, session_epoch=-1,
        topics=[T(partitions=[P(partition=2, current_leader_epoch=-1, fetch_offset=41, last_fetched_epoch=-1, log_start_offset=-1, partition_max_bytes=1048576)], **kw)], forgotten_topics_data=[], rack_id="")
    r.with_header(correlation_id=corr, client_id="kafka-python-consumer-1")
    return r.encode(version=version, header=True, framed=True)

def metadata_request(version, corr):
    from kafka.protocol.metadata import MetadataRequest
    r = MetadataRequest(topics=None, allow_auto_topic_creation=True, include_topic_authorized_operations=False)
    r.with_header(correlation_id=corr, client_id="kafka-python-consumer-1")
    return r.encode(version=version, header=True, framed=True)

TID = uuid.UUID("8f5c3c6e-1b2a-4c3d-9e8f-0a1b2c3d4e5f")
out = {
    "PRODUCE_V9": produce(9, 5),
    "PRODUCE_V7": produce(7, 6),
    "FETCH_V12": fetch_request(12, 9),
    "FETCH_V11": fetch_request(11, 9),
    "FETCH_V13": fetch_request(13, 9, TID),
    "METADATA_V12": metadata_request(12, 8),
    "PRODUCE_RESPONSE_V9": frame(produce_response(9, 5, 0)),
    "PRODUCE_RESPONSE_V7_ERROR": frame(produce_response(7, 6, 3)),
    "FETCH_RESPONSE_V12": frame(fetch_response(12, 9)),
    "FETCH_RESPONSE_V11": frame(fetch_response(11, 9)),
    "FETCH_RESPONSE_V13": frame(fetch_response(13, 9, TID)),
    "METADATA_RESPONSE_V12": frame(metadata_response(12, 8, TID)),
}
for name, b in out.items():
    print(f"const {name}: &str = \"{b.hex()}\";")
