"""Label Studio label configs: parsed safely with the standard library, reduced to the one
classification interface a backend serves.

A label config is XML such as::

    <View>
      <Image name="image" value="$image"/>
      <Choices name="label" toName="image">
        <Choice value="Cat"/><Choice value="Dog"/>
      </Choices>
    </View>

`parse_interface` finds a `Choices` control bound to an `Image` (image classification) or a
`Text`/`HyperText` object (text classification) and answers the names Label Studio expects in a
prediction (`from_name`, `to_name`), the task data key (`$image` -> `image`) and the labels in
order (a choice's `alias` when it has one, as Label Studio stores it in results).

Parsing uses expat directly and refuses any DOCTYPE, entity declaration or external entity, so
"billion laughs" and XXE inputs fail fast; configs are also capped in size and depth.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from xml.etree import ElementTree
from xml.parsers import expat

MAX_CONFIG_CHARS = 256 * 1024
MAX_DEPTH = 64
MAX_LABELS = 10_000

IMAGE_TAGS = frozenset({"Image"})
TEXT_TAGS = frozenset({"Text", "HyperText"})


class LabelConfigError(ValueError):
    """A label config that is malformed, unsafe or has no supported interface."""


@dataclass(frozen=True)
class Interface:
    """What a backend predicts: one Choices control over one image or text object."""

    # "image" | "text" (classification), "ner" (named entities over a text), "detection"
    # (rectangles over an image)
    kind: str
    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]
    multiple: bool = False

    def as_dict(self) -> dict:
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Interface:
        return cls(
            kind=data["kind"],
            from_name=data["from_name"],
            to_name=data["to_name"],
            data_key=data["data_key"],
            labels=tuple(data["labels"]),
            multiple=bool(data.get("multiple", False)),
        )


def _refuse(what: str):
    def handler(*_args):
        raise LabelConfigError(f"the label config contains {what}, which is not allowed")

    return handler


def parse_xml(text: str) -> ElementTree.Element:
    """Parse label-config XML into an ElementTree, refusing DTDs and entities."""
    if not isinstance(text, str) or not text.strip():
        raise LabelConfigError("the label config is empty")
    if len(text) > MAX_CONFIG_CHARS:
        raise LabelConfigError(f"the label config is longer than {MAX_CONFIG_CHARS} characters")
    builder = ElementTree.TreeBuilder()
    depth = 0

    def start(tag, attrs):
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise LabelConfigError(f"the label config nests deeper than {MAX_DEPTH} levels")
        builder.start(tag, attrs)

    def end(tag):
        nonlocal depth
        depth -= 1
        builder.end(tag)

    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse("a DOCTYPE")
    parser.EntityDeclHandler = _refuse("an entity declaration")
    parser.UnparsedEntityDeclHandler = _refuse("an entity declaration")
    parser.ExternalEntityRefHandler = _refuse("an external entity")
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        raise LabelConfigError(f"the label config is not well-formed XML: {exc}") from None
    return builder.close()


def _data_key(value: str | None, name: str) -> str:
    if not value or not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(
            f'object tag {name!r} must take its data from the task (value="$key")'
        )
    return value[1:]


def _objects(root: ElementTree.Element) -> dict[str, ElementTree.Element]:
    objects = {}
    for element in root.iter():
        name = element.get("name")
        if name and (element.tag in IMAGE_TAGS or element.tag in TEXT_TAGS):
            objects[name] = element
    return objects


def _candidates(root, objects, tag: str, from_name: str | None, allowed_objects):
    found = []
    for control in root.iter(tag):
        name = control.get("name")
        targets = [t.strip() for t in (control.get("toName") or "").split(",") if t.strip()]
        if not name or not targets:
            raise LabelConfigError(f"every <{tag}> needs a name and a toName")
        if from_name is not None and name != from_name:
            continue
        target = next(
            (t for t in targets if t in objects and objects[t].tag in allowed_objects), None
        )
        if target is not None:
            found.append((control, objects[target]))
    return found


def _labels_of(control: ElementTree.Element, item_tag: str) -> list[str]:
    labels = []
    for choice in control.iter(item_tag):
        label = choice.get("alias") or choice.get("value")
        if not label:
            raise LabelConfigError(f"a <{item_tag}> of {control.get('name')!r} has no value")
        if label in labels:
            raise LabelConfigError(f"the {item_tag.lower()} {label!r} appears twice")
        labels.append(label)
    if not labels:
        raise LabelConfigError(f"<{control.tag} name={control.get('name')!r}> has no <{item_tag}>")
    if len(labels) > MAX_LABELS:
        raise LabelConfigError(f"more than {MAX_LABELS} {item_tag.lower()}s")
    return labels


def _interface_of(root: ElementTree.Element, from_name: str | None) -> Interface:
    objects = _objects(root)
    candidates = _candidates(root, objects, "Choices", from_name, IMAGE_TAGS | TEXT_TAGS)
    if candidates:
        control, obj = candidates[0]
        return Interface(
            kind="image" if obj.tag in IMAGE_TAGS else "text",
            from_name=control.get("name"),
            to_name=obj.get("name"),
            data_key=_data_key(obj.get("value"), obj.get("name")),
            labels=tuple(_labels_of(control, "Choice")),
            multiple=(control.get("choice") or "single") == "multiple",
        )
    # Named entities: <Labels> over a plain <Text> (character offsets; HyperText uses XPaths).
    spans = _candidates(root, objects, "Labels", from_name, frozenset({"Text"}))
    if spans:
        control, obj = spans[0]
        return Interface(
            kind="ner",
            from_name=control.get("name"),
            to_name=obj.get("name"),
            data_key=_data_key(obj.get("value"), obj.get("name")),
            labels=tuple(_labels_of(control, "Label")),
            multiple=False,
        )
    # Object detection: <RectangleLabels> over an <Image>.
    boxes = _candidates(root, objects, "RectangleLabels", from_name, IMAGE_TAGS)
    if boxes:
        control, obj = boxes[0]
        return Interface(
            kind="detection",
            from_name=control.get("name"),
            to_name=obj.get("name"),
            data_key=_data_key(obj.get("value"), obj.get("name")),
            labels=tuple(_labels_of(control, "Label")),
            multiple=False,
        )
    wanted = f" named {from_name!r}" if from_name else ""
    raise LabelConfigError(
        f"no <Choices>{wanted} over an <Image> or <Text>, <Labels>{wanted} over a <Text> or "
        f"<RectangleLabels>{wanted} over an <Image>: only image and text classification "
        "(Choices), named entities (Labels over Text) and object detection (RectangleLabels "
        "over Image) are supported"
    )


@functools.lru_cache(maxsize=256)
def parse_interface(label_config: str, from_name: str | None = None) -> Interface:
    """The classification interface of a label config (cached: configs repeat on every call).

    `from_name` picks one Choices control when the config has several; by default the first
    one bound to an image or text object is used. Raises LabelConfigError.
    """
    if from_name is not None and not isinstance(from_name, str):
        raise LabelConfigError("from_name must be a string")
    return _interface_of(parse_xml(label_config), from_name or None)
