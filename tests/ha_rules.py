"""Home Assistant's MQTT discovery rules, as data, and what Home Assistant makes of a message.

Home Assistant cannot run here (2026.2 needs Python 3.13 and much else), so the rules its
MQTT integration applies to a device discovery message are written down as data, each table
naming the file of homeassistant 2026.2.3 it was read from (`pip download --no-deps
homeassistant==2026.2.3`; paths under homeassistant/components/, or homeassistant/ for
const.py, helpers/ and util/). Where these tables and Home Assistant part, the tables are
wrong: fix them from the file named. tests/test_home_assistant.py applies them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2

Config = dict[str, Any]

# --- Home Assistant's rules (homeassistant==2026.2.3) -------------------------------------

# mqtt/abbreviations.py ABBREVIATIONS: the entries for the options in the tables below
ABBREVIATIONS = {
    "avty": "availability",
    "avty_mode": "availability_mode",
    "avty_t": "availability_topic",
    "avty_tpl": "availability_template",
    "cmd_t": "command_topic",
    "cmps": "components",
    "cont_type": "content_type",
    "def_ent_id": "default_entity_id",
    "dev": "device",
    "dev_cla": "device_class",
    "e": "encoding",
    "en": "enabled_by_default",
    "ent_cat": "entity_category",
    "ent_pic": "entity_picture",
    "exp_aft": "expire_after",
    "frc_upd": "force_update",
    "ic": "icon",
    "img_e": "image_encoding",
    "img_t": "image_topic",
    "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template",
    "lrst_val_tpl": "last_reset_value_template",
    "o": "origin",
    "obj_id": "object_id",
    "off_dly": "off_delay",
    "ops": "options",
    "p": "platform",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "stat_cla": "state_class",
    "stat_t": "state_topic",
    "sug_dsp_prc": "suggested_display_precision",
    "t": "topic",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "url_t": "url_topic",
    "url_tpl": "url_template",
    "val_tpl": "value_template",
}
# mqtt/abbreviations.py DEVICE_ABBREVIATIONS, ORIGIN_ABBREVIATIONS
DEVICE_ABBREVIATIONS = {
    "cns": "connections",
    "cu": "configuration_url",
    "ids": "identifiers",
    "mf": "manufacturer",
    "mdl": "model",
    "mdl_id": "model_id",
    "hw": "hw_version",
    "sw": "sw_version",
    "sa": "suggested_area",
    "sn": "serial_number",
}
ORIGIN_ABBREVIATIONS = {"sw": "sw_version", "url": "support_url"}

# mqtt/schemas.py SHARED_OPTIONS: the only options a component takes from the device
# message (mqtt/discovery.py _merge_common_device_options). `qos` is not among them.
SHARED_OPTIONS = (
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "command_topic",
    "payload_available",
    "payload_not_available",
    "state_topic",
)
# mqtt/schemas.py _MQTT_AVAILABILITY_SINGLE_SCHEMA and _MQTT_AVAILABILITY_LIST_SCHEMA
AVAILABILITY = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "payload_available",
    "payload_not_available",
}
AVAILABILITY_ENTRY = {"topic", "payload_available", "payload_not_available", "value_template"}
AVAILABILITY_MODES = {"all", "any", "latest"}  # mqtt/const.py AVAILABILITY_MODES
DEFAULT_AVAILABLE, DEFAULT_NOT_AVAILABLE = "online", "offline"  # mqtt/const.py
# mqtt/schemas.py MQTT_ENTITY_COMMON_SCHEMA
COMMON = AVAILABILITY | {
    "default_entity_id",
    "device",
    "enabled_by_default",
    "entity_category",
    "entity_picture",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "object_id",
    "origin",
    "unique_id",
}
# mqtt/config.py SCHEMA_BASE (MQTT_BASE_SCHEMA; qos defaults to DEFAULT_QOS = 0 in
# mqtt/const.py) and MQTT_RO_SCHEMA
BASE = {"qos", "encoding"}
DEFAULT_QOS = 0
READ_ONLY = BASE | {"state_topic", "value_template"}
# The options of each platform. Anything else is dropped without a word (each platform's
# DISCOVERY_SCHEMA is built with extra=vol.REMOVE_EXTRA): a misspelt option goes unnoticed.
OPTIONS = {
    # mqtt/sensor.py _PLATFORM_SCHEMA_BASE
    "sensor": COMMON
    | READ_ONLY
    | {
        "device_class",
        "expire_after",
        "force_update",
        "last_reset_value_template",
        "name",
        "options",
        "suggested_display_precision",
        "state_class",
        "unit_of_measurement",
    },
    # mqtt/binary_sensor.py PLATFORM_SCHEMA_MODERN
    "binary_sensor": COMMON
    | READ_ONLY
    | {
        "device_class",
        "expire_after",
        "force_update",
        "name",
        "off_delay",
        "payload_off",
        "payload_on",
    },
    # mqtt/image.py PLATFORM_SCHEMA_BASE
    "image": COMMON
    | BASE
    | {"content_type", "image_encoding", "image_topic", "name", "url_template", "url_topic"},
}
# mqtt/config.py MQTT_RO_SCHEMA: state_topic is required; mqtt/schemas.py check_unique_id:
# so is unique_id on every entity platform (mqtt/const.py ENTITY_PLATFORMS)
REQUIRED = {
    "sensor": {"state_topic", "unique_id"},
    "binary_sensor": {"state_topic", "unique_id"},
    "image": {"unique_id"},  # and one of image_topic, url_topic (validate_topic_required)
}
# mqtt/binary_sensor.py DEFAULT_PAYLOAD_ON / DEFAULT_PAYLOAD_OFF; mqtt/const.py PAYLOAD_NONE
DEFAULT_PAYLOAD_ON, DEFAULT_PAYLOAD_OFF = "ON", "OFF"
PAYLOAD_NONE = "None"
# mqtt/schemas.py DEVICE_DISCOVERY_SCHEMA, MQTT_ENTITY_DEVICE_INFO_SCHEMA,
# MQTT_ORIGIN_INFO_SCHEMA
DEVICE_MESSAGE = AVAILABILITY | {
    "command_topic",
    "components",
    "device",
    "encoding",
    "origin",
    "qos",
    "state_topic",
}
DEVICE_INFO = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
ORIGIN_INFO = {"name", "sw_version", "support_url"}
# mqtt/discovery.py TOPIC_MATCHER (matched after the discovery prefix and its "/")
TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
# options validated with mqtt/util.py valid_subscribe_topic, and with cv.template
TOPICS = {"availability_topic", "image_topic", "json_attributes_topic", "state_topic", "url_topic"}
TEMPLATES = {
    "availability_template",
    "json_attributes_template",
    "last_reset_value_template",
    "url_template",
    "value_template",
}
# helpers/config_validation.py positive_int, boolean, string
POSITIVE_INTS = {"expire_after", "off_delay", "suggested_display_precision"}
BOOLEANS = {"enabled_by_default", "force_update"}
STRINGS = {"content_type", "default_entity_id", "encoding", "object_id", "unique_id"}
STRINGS |= {"payload_available", "payload_not_available", "payload_off", "payload_on"}
# const.py EntityCategory (helpers/entity.py ENTITY_CATEGORIES_SCHEMA); a sensor or binary
# sensor of category config is refused (sensor/__init__.py, binary_sensor/__init__.py
# async_internal_added_to_hass)
ENTITY_CATEGORIES = {"config", "diagnostic"}
NO_CONFIG_CATEGORY = {"sensor", "binary_sensor"}
IMAGE_ENCODINGS = {"b64", "raw"}  # mqtt/image.py
MAX_STATE_LENGTH = 255  # const.py MAX_LENGTH_STATE_STATE (mqtt/util.py check_state_too_long)

# binary_sensor/__init__.py BinarySensorDeviceClass
BINARY_SENSOR_DEVICE_CLASSES = (
    {"battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door"}
    | {"garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving"}
    | {"occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety"}
    | {"smoke", "sound", "tamper", "update", "vibration", "window"}
)
# sensor/const.py SensorStateClass
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
# sensor/const.py DEVICE_CLASS_STATE_CLASSES: the state classes each SensorDeviceClass
# allows (another one: "impossible considering device class", and no statistics)
_MEASUREMENT_ONLY = (
    {"absolute_humidity", "apparent_power", "aqi", "atmospheric_pressure", "battery"}
    | {"blood_glucose_concentration", "carbon_monoxide", "carbon_dioxide", "conductivity"}
    | {"current", "data_rate", "energy_distance", "energy_storage", "frequency", "humidity"}
    | {"illuminance", "irradiance", "moisture", "nitrogen_dioxide", "nitrogen_monoxide"}
    | {"nitrous_oxide", "ozone", "ph", "pm1", "pm10", "pm25", "pm4", "power_factor", "power"}
    | {"precipitation_intensity", "pressure", "reactive_power", "signal_strength"}
    | {"sound_pressure", "speed", "sulphur_dioxide", "temperature", "temperature_delta"}
    | {"volatile_organic_compounds", "volatile_organic_compounds_parts", "voltage"}
    | {"volume_storage", "volume_flow_rate", "wind_speed"}
)
DEVICE_CLASS_STATE_CLASSES: dict[str, set[str]] = {
    **{device_class: {"measurement"} for device_class in _MEASUREMENT_ONLY},
    **dict.fromkeys(("area", "data_size", "distance", "duration", "precipitation"), STATE_CLASSES),
    **{c: {"total", "total_increasing"} for c in ("energy", "gas", "reactive_energy")},
    **{c: {"total", "total_increasing"} for c in ("volume", "water")},
    "monetary": {"total"},
    "weight": {"measurement", "total", "total_increasing"},
    "wind_direction": {"measurement_angle"},
    "date": set(),
    "enum": set(),
    "timestamp": set(),
}
SENSOR_DEVICE_CLASSES = set(DEVICE_CLASS_STATE_CLASSES)  # sensor/const.py SensorDeviceClass
NON_NUMERIC_DEVICE_CLASSES = {"date", "enum", "timestamp"}  # sensor/const.py
STATE_CLASS_UNITS = {"measurement_angle": {"°"}}  # sensor/const.py STATE_CLASS_UNITS
# sensor/const.py DEVICE_CLASS_UNITS, for the device classes framewire uses; a sensor with
# another device class and a unit fails the check until its units are copied in here
DEVICE_CLASS_UNITS = {"duration": {"d", "h", "min", "s", "ms", "μs"}}  # UnitOfTime


# --- what Home Assistant makes of a device message ----------------------------------------
def _expand(options: Mapping[str, Any], abbreviations: Mapping[str, str]) -> Config:
    return {abbreviations.get(key, key): value for key, value in options.items()}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]  # cv.ensure_list


def device_message(doc: Mapping[str, Any]) -> Config:
    """The message with its abbreviations expanded (mqtt/discovery.py
    _replace_all_abbreviations)."""
    message = _expand(doc, ABBREVIATIONS)
    if isinstance(message.get("device"), dict):
        message["device"] = _expand(message["device"], DEVICE_ABBREVIATIONS)
    if isinstance(message.get("origin"), dict):
        message["origin"] = _expand(message["origin"], ORIGIN_ABBREVIATIONS)
    if "availability" in message:
        message["availability"] = [
            _expand(a, ABBREVIATIONS) if isinstance(a, dict) else a
            for a in _as_list(message["availability"])
        ]
    return message


def components(doc: Mapping[str, Any]) -> dict[str, Config]:
    """Each component as its platform sees it: abbreviations expanded, the shared device
    options merged in where the component has none of its own, `~` replaced
    (mqtt/discovery.py async_start, _merge_common_device_options, _replace_topic_base)."""
    message = device_message(doc)
    found: dict[str, Config] = {}
    for component_id, raw in dict(message.get("components") or {}).items():
        config = _expand(raw, ABBREVIATIONS)
        if "availability" in config:
            config["availability"] = [
                _expand(a, ABBREVIATIONS) if isinstance(a, dict) else a
                for a in _as_list(config["availability"])
            ]
        for option in SHARED_OPTIONS:
            if option in message and option not in config:
                config[option] = message[option]
        if "~" in config:
            base = config.pop("~")
            for key, value in list(config.items()):
                if key.endswith("topic") and isinstance(value, str) and value:
                    if value.startswith("~"):
                        config[key] = base + value[1:]
                    if value.endswith("~"):
                        config[key] = value[:-1] + base
        found[str(component_id)] = config
    return found


def availability_topics(config: Config) -> dict[str, tuple[str, str]]:
    """topic -> (payload available, payload not available): mqtt/entity.py
    MqttAvailabilityMixin._availability_setup_from_config."""
    topics: dict[str, tuple[str, str]] = {}
    if "availability_topic" in config:
        topics[config["availability_topic"]] = (
            config.get("payload_available", DEFAULT_AVAILABLE),
            config.get("payload_not_available", DEFAULT_NOT_AVAILABLE),
        )
    for entry in config.get("availability", []):
        topics[entry["topic"]] = (
            entry.get("payload_available", DEFAULT_AVAILABLE),
            entry.get("payload_not_available", DEFAULT_NOT_AVAILABLE),
        )
    return topics


def available(config: Config, retained: Mapping[str, bytes]) -> bool:
    """Whether Home Assistant shows the entity available, given the last message on each
    availability topic (mqtt/entity.py MqttAvailabilityMixin.available; one topic, or
    mode latest, decided by its last message)."""
    seen: list[bool] = []
    for topic, (yes, no) in availability_topics(config).items():
        payload = retained.get(topic, b"").decode()
        if payload in (yes, no):
            seen.append(payload == yes)
    if not availability_topics(config):
        return True  # no availability of its own: available while HA has the broker
    mode = config.get("availability_mode", "latest")
    if mode == "all":
        return len(seen) == len(availability_topics(config)) and all(seen)
    return any(seen) if mode == "any" else bool(seen) and seen[-1]


def render(config: Config, payload: bytes) -> str:
    """The state an entity gets from `payload` (mqtt/models.py MqttValueTemplate: `value`
    and `value_json`, the result stripped). Jinja2 stands in for Home Assistant's template
    environment; framewire's templates use only filters both have."""
    text = payload.decode()
    template = config.get("value_template")
    if template is None:
        return text
    try:
        value_json: Any = json.loads(text)
    except ValueError:
        value_json = None
    env = jinja2.Environment(autoescape=False)
    return env.from_string(template).render(value=text, value_json=value_json).strip()


# --- the rules ------------------------------------------------------------------------------
def topic_problem(topic: Any) -> str | None:
    """mqtt/util.py valid_topic + valid_subscribe_topic."""
    if not isinstance(topic, str) or not topic:
        return "is not a topic"
    if len(topic.encode()) > 65535:
        return "is longer than 65535 bytes"
    for char in topic:
        if char <= "\x1f" or "\x7f" <= char <= "\x9f":
            return "holds a control character"
        if "\ufdd0" <= char <= "\ufdef" or (ord(char) & 0xFFFF) in (0xFFFE, 0xFFFF):
            return "holds a non-character"
    for level in topic.split("/"):
        if "+" in level and level != "+":
            return "has a '+' that is not a whole level"
    if "#" in topic and (topic.index("#") != len(topic) - 1 or topic[-2:-1] not in ("", "/")):
        return "has a '#' that is not the last level"
    return None


def template_problem(template: Any) -> str | None:
    if not isinstance(template, str):
        return "is not a template"
    try:
        jinja2.Environment(autoescape=False).parse(template)
    except jinja2.TemplateSyntaxError as err:
        return f"does not compile: {err}"
    return None


def availability_problems(where: str, config: Config) -> list[str]:
    problems = []
    if "availability" in config and "availability_topic" in config:
        problems.append(f"{where}: availability and availability_topic exclude each other")
    if config.get("availability_mode", "latest") not in AVAILABILITY_MODES:
        problems.append(f"{where}: availability_mode {config['availability_mode']!r}")
    for entry in _as_list(config.get("availability", [])):
        if not isinstance(entry, dict):
            problems.append(f"{where}: availability entry {entry!r} is not a mapping")
            continue
        if extra := set(entry) - AVAILABILITY_ENTRY:
            problems.append(f"{where}: availability entry options {sorted(extra)} unknown")
        if (why := topic_problem(entry.get("topic"))) is not None:
            problems.append(f"{where}: availability topic {why}")
    return problems


def device_problems(topic: str, ha_prefix: str, doc: Mapping[str, Any]) -> list[str]:
    """mqtt/discovery.py (topic) and mqtt/schemas.py DEVICE_DISCOVERY_SCHEMA."""
    problems = []
    match = TOPIC_MATCHER.fullmatch(topic.removeprefix(f"{ha_prefix}/"))
    if not topic.startswith(f"{ha_prefix}/") or match is None:
        problems.append(f"topic {topic!r} is not a discovery topic")
    elif match["component"] != "device":
        problems.append(f"topic {topic!r} is not a device discovery topic")
    message = device_message(doc)
    if extra := set(message) - DEVICE_MESSAGE:
        problems.append(f"device message: options {sorted(extra)} unknown")
    for required in ("device", "components", "origin"):
        if required not in message:
            problems.append(f"device message: no {required}")
    device = message.get("device", {})
    if extra := set(device) - DEVICE_INFO:
        problems.append(f"device: options {sorted(extra)} unknown")
    if not device.get("identifiers") and not device.get("connections"):
        problems.append("device: neither identifiers nor connections")
    origin = message.get("origin", {})
    if extra := set(origin) - ORIGIN_INFO:
        problems.append(f"origin: options {sorted(extra)} unknown")
    if not isinstance(origin.get("name"), str):
        problems.append("origin: no name")
    if message.get("qos", DEFAULT_QOS) not in (0, 1, 2):
        problems.append(f"device message: qos {message['qos']!r}")
    return problems + availability_problems("device message", message)


def sensor_problems(where: str, config: Config) -> list[str]:
    """mqtt/sensor.py validate_sensor_state_and_device_class_config, and what
    sensor/__init__.py SensorEntity.state refuses or warns about."""
    problems = []
    device_class = config.get("device_class")
    state_class = config.get("state_class")
    unit = config.get("unit_of_measurement")
    if isinstance(unit, str) and not unit.strip():
        unit = None  # mqtt/sensor.py drops an empty unit
    if device_class is not None and device_class not in SENSOR_DEVICE_CLASSES:
        problems.append(f"{where}: device_class {device_class!r} unknown")
    if state_class is not None and state_class not in STATE_CLASSES:
        problems.append(f"{where}: state_class {state_class!r} unknown")
    if "last_reset_value_template" in config and state_class != "total":
        problems.append(f"{where}: last_reset_value_template needs state_class total")
    if "options" in config:
        if not config["options"]:
            problems.append(f"{where}: an empty options list")
        if state_class or unit:
            problems.append(f"{where}: options with a state_class or a unit")
        if device_class != "enum":
            problems.append(f"{where}: options need device_class enum")
    if state_class in STATE_CLASS_UNITS and unit not in STATE_CLASS_UNITS[state_class]:
        problems.append(f"{where}: unit {unit!r} with state_class {state_class}")
    if device_class in NON_NUMERIC_DEVICE_CLASSES and unit:
        problems.append(f"{where}: a unit on a {device_class} sensor, which is not a number")
    if device_class in DEVICE_CLASS_STATE_CLASSES and state_class:
        allowed = DEVICE_CLASS_STATE_CLASSES[device_class]
        if state_class not in allowed:
            problems.append(
                f"{where}: state_class {state_class} is impossible for device_class "
                f"{device_class} (allowed: {sorted(allowed) or 'none'})"
            )
    if device_class in DEVICE_CLASS_UNITS and unit not in DEVICE_CLASS_UNITS[device_class]:
        problems.append(f"{where}: unit {unit!r} is not one of device_class {device_class}")
    elif (
        unit
        and device_class is not None
        and device_class not in NON_NUMERIC_DEVICE_CLASSES
        and device_class not in DEVICE_CLASS_UNITS
    ):
        problems.append(
            f"{where}: the units of device_class {device_class} are not in this test "
            "(copy them from sensor/const.py DEVICE_CLASS_UNITS)"
        )
    return problems


def component_problems(component_id: str, config: Config) -> list[str]:
    """Everything Home Assistant would refuse, drop or warn about in one component."""
    platform = config.get("platform")
    where = f"{component_id} ({config.get('name')!r}, {platform})"
    if platform not in OPTIONS:
        return [f"{where}: the rules of platform {platform!r} are not in this test"]
    problems = []
    if extra := set(config) - OPTIONS[platform] - {"platform"}:
        problems.append(f"{where}: options {sorted(extra)} unknown (HA drops them)")
    if missing := REQUIRED[platform] - set(config):
        problems.append(f"{where}: no {sorted(missing)}")
    if config.get("qos", DEFAULT_QOS) not in (0, 1, 2):
        problems.append(f"{where}: qos {config['qos']!r}")
    problems += availability_problems(where, config)
    for key in TOPICS & set(config):
        if (why := topic_problem(config[key])) is not None:
            problems.append(f"{where}: {key} {why}")
    for key in TEMPLATES & set(config):
        if (why := template_problem(config[key])) is not None:
            problems.append(f"{where}: {key} {why}")
    for key in POSITIVE_INTS & set(config):
        if not isinstance(config[key], int) or config[key] < 0:
            problems.append(f"{where}: {key} {config[key]!r} is not a positive int")
    for key in BOOLEANS & set(config):
        if not isinstance(config[key], bool):
            problems.append(f"{where}: {key} {config[key]!r} is not a boolean")
    for key in STRINGS & set(config):
        if not isinstance(config[key], str):
            problems.append(f"{where}: {key} {config[key]!r} is not a string")
    if not isinstance(config.get("name"), str | None):
        problems.append(f"{where}: name {config['name']!r} is not a string")
    category = config.get("entity_category")
    if category is not None and category not in ENTITY_CATEGORIES:
        problems.append(f"{where}: entity_category {category!r} unknown")
    if category == "config" and platform in NO_CONFIG_CATEGORY:
        problems.append(f"{where}: a {platform} cannot be of entity_category config")
    if platform == "sensor":
        problems += sensor_problems(where, config)
    elif platform == "binary_sensor":
        device_class = config.get("device_class")
        if device_class is not None and device_class not in BINARY_SENSOR_DEVICE_CLASSES:
            problems.append(f"{where}: device_class {device_class!r} unknown")
    elif platform == "image":  # mqtt/image.py validate_topic_required
        if ("image_topic" in config) == ("url_topic" in config):
            problems.append(f"{where}: exactly one of image_topic and url_topic")
        if "content_type" in config and "url_topic" in config:
            problems.append(f"{where}: content_type with url_topic")
        if config.get("image_encoding", "raw") not in IMAGE_ENCODINGS:
            problems.append(f"{where}: image_encoding {config['image_encoding']!r}")
    return problems


def numeric_expected(config: Config) -> bool:
    """sensor/__init__.py _numeric_state_expected."""
    device_class = config.get("device_class")
    if device_class in NON_NUMERIC_DEVICE_CLASSES:
        return False
    if any(
        config.get(key) not in (None, "")
        for key in ("state_class", "unit_of_measurement", "suggested_display_precision")
    ):
        return True
    return device_class is not None


def value_problem(config: Config, payload: bytes) -> str | None:
    """What Home Assistant makes of `payload` on the state topic, when it is not a state:
    mqtt/sensor.py _update_state, sensor/__init__.py SensorEntity.state and
    mqtt/binary_sensor.py _state_message_received."""
    value = render(config, payload)
    platform = config["platform"]
    if platform == "binary_sensor":
        on = config.get("payload_on", DEFAULT_PAYLOAD_ON)
        off = config.get("payload_off", DEFAULT_PAYLOAD_OFF)
        if value not in (on, off, PAYLOAD_NONE):
            return f"{value!r} is neither {on!r} nor {off!r} (ignored)"
        return None
    if platform != "sensor" or value == PAYLOAD_NONE:  # "None": the state is unknown
        return None
    device_class = config.get("device_class")
    if numeric_expected(config):
        if value == "":
            return "an empty value, which a numeric sensor ignores"
        try:
            if "." not in value and "e" not in value:
                try:
                    number: float = int(value)
                except ValueError:
                    number = float(value)  # nan, inf
            else:
                number = float(value)
        except ValueError:
            return f"{value!r} is not a number, and this sensor must be one"
        return None if math.isfinite(number) else f"{value!r} is not a finite number"
    if device_class == "enum":
        return None if value in config.get("options", []) else f"{value!r} is not an option"
    if device_class == "timestamp":  # util/dt.py parse_datetime; fromisoformat stands in
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return f"{value!r} is not an ISO 8601 time"
        return None if moment.tzinfo is not None else f"{value!r} has no time zone"
    if len(value) > MAX_STATE_LENGTH:
        return f"a state of {len(value)} characters, over {MAX_STATE_LENGTH}"
    return None


def ha_state(config: Config, retained: Mapping[str, bytes]) -> str:
    """The state Home Assistant shows, from the retained messages: "unavailable", or the
    rendered value ("on"/"off" for a binary sensor, "unknown" for None)."""
    if not available(config, retained):
        return "unavailable"
    value = render(config, retained[config["state_topic"]])
    if config["platform"] == "binary_sensor":
        if value == config.get("payload_on", DEFAULT_PAYLOAD_ON):
            return "on"
        if value == config.get("payload_off", DEFAULT_PAYLOAD_OFF):
            return "off"
    return "unknown" if value == PAYLOAD_NONE else value
