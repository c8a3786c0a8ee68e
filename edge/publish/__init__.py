"""Publishing: the store-and-forward outbox and the MQTT publisher that drains it.

``outbox`` is pure SQLite and has no network code; ``mqtt`` is the only module that imports paho.
"""

from edge.publish.mqtt import MqttPublisher, PublisherCounters
from edge.publish.outbox import DROP_ORDER, KINDS, KindStats, Outbox, OutboxRow, OutboxStats

__all__ = ["DROP_ORDER", "KINDS", "KindStats", "MqttPublisher", "Outbox", "OutboxRow", "OutboxStats",
           "PublisherCounters"]
