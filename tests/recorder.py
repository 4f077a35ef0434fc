"""A plain MQTT 5 client (paho, its own thread) that records what it sees, for assertions."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool
    user_properties: list[tuple[str, str]]
    content_type: str | None


class Recorder:
    def __init__(
        self, port: int, *topics: str, username: str | None = None, password: str | None = None
    ) -> None:
        self.messages: list[Seen] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self._connack: list[Any] = []
        connected = threading.Event()

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            self._connack.append(reason)
            connected.set()

        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not connected.wait(10) or self._connack[0].is_failure:
            self.close()
            raise ConnectionRefusedError(f"broker refused the connection: {self._connack}")
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            if not self._subscribed.wait(10):
                raise AssertionError(f"subscription to {topics} not acknowledged")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        seen = Seen(
            topic=msg.topic,
            payload=bytes(msg.payload),
            retain=bool(msg.retain),
            user_properties=list(getattr(props, "UserProperty", []) or []),
            content_type=getattr(props, "ContentType", None),
        )
        with self._lock:
            self.messages.append(seen)

    def on(self, topic: str) -> list[Seen]:
        with self._lock:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic, m.topic)]

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        user_properties: list[tuple[str, str]] | None = None,
        retain: bool = False,
    ) -> int:
        props = None
        if user_properties is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = user_properties
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        info.wait_for_publish(10)
        return info.rc

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
