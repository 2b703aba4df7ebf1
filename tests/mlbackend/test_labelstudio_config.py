"""Label configs (parsed safely, reduced to an interface) and the text featurizer of ml/text.py."""

import numpy as np
import pytest

from apps.mlbackend.labelstudio.label_config import LabelConfigError, parse_interface
from ml.text import hashed_char_ngrams
from tests.mlbackend.labelstudio_helpers import IMAGE_CONFIG, TEXT_CONFIG


def test_image_and_text_classification_configs():
    image = parse_interface(IMAGE_CONFIG)
    assert (image.kind, image.from_name, image.to_name, image.data_key) == (
        "image",
        "choice",
        "image",
        "image",
    )
    assert image.labels == ("Horizontal", "Vertical")
    text = parse_interface(TEXT_CONFIG)
    assert (text.kind, text.from_name, text.to_name, text.data_key) == (
        "text",
        "sentiment",
        "text",
        "text",
    )
    assert text.labels == ("Positive", "Negative")


def test_aliases_nesting_several_controls_and_from_name():
    config = """<View>
      <Header value="Pick"/>
      <Text name="title" value="$title"/>
      <View style="display: flex">
        <HyperText name="body" value="$html"/>
        <Choices name="topic" toName="body" choice="multiple">
          <Choice value="Sports" alias="sport"/><Choice value="Politics"/>
        </Choices>
      </View>
      <Choices name="lang" toName="title"><Choice value="en"/><Choice value="fr"/></Choices>
    </View>"""
    first = parse_interface(config)
    assert (first.from_name, first.data_key, first.labels, first.multiple) == (
        "topic",
        "html",
        ("sport", "Politics"),
        True,
    )
    lang = parse_interface(config, "lang")
    assert (lang.to_name, lang.data_key, lang.labels) == ("title", "title", ("en", "fr"))


@pytest.mark.parametrize(
    "config, message",
    [
        # billion laughs: refused at the DOCTYPE, before any expansion
        (
            '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><View>&b;</View>',
            "DOCTYPE",
        ),
        # XXE
        ('<!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]><View>&x;</View>', "DOCTYPE"),
        ("<View>&undefined;</View>", "not well-formed"),
        ("<View><Image name='i' value='$image'>", "not well-formed"),
        ("", "empty"),
        ("<View>" * 100 + "</View>" * 100, "deeper"),
        ("<View>" + " " * (300 * 1024) + "</View>", "longer"),
        ("<View><Image name='i' value='$image'/></View>", "no <Choices>"),
        (
            "<View><Image name='i' value='$image'/>"
            "<KeyPointLabels name='r' toName='i'><Label value='a'/></KeyPointLabels></View>",
            "no <Choices>",
        ),
        (
            "<View><Image name='i' value='$image'/><Choices name='c' toName='i'/></View>",
            "no <Choice>",
        ),
        (
            "<View><Image name='i' value='http://x/y.png'/>"
            "<Choices name='c' toName='i'><Choice value='a'/></Choices></View>",
            "value=",
        ),
        (
            "<View><Text name='t' value='$t'/><Choices name='c' toName='t'>"
            "<Choice value='a'/><Choice value='a'/></Choices></View>",
            "twice",
        ),
    ],
)
def test_bad_and_hostile_configs_are_refused(config, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_interface(config)


def test_from_name_that_does_not_exist():
    with pytest.raises(LabelConfigError, match="named 'nope'"):
        parse_interface(TEXT_CONFIG, "nope")


# --- ml/text.py ----------------------------------------------------------------------------------


def test_hashed_ngrams_are_deterministic_normalised_and_discriminative():
    texts = ["I loved this film", "i LOVED   this\tfilm", "A dreadful, boring film", ""]
    x = hashed_char_ngrams(texts, 256)
    assert x.shape == (4, 256) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x[:3], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(x[0], x[1])  # case and whitespace do not matter
    assert float(x[0] @ x[2]) < 0.6  # different texts are far apart
    # The same in another call (no per-process salt) and case-sensitive on request.
    np.testing.assert_array_equal(hashed_char_ngrams(texts[:1], 256)[0], x[0])
    cased = hashed_char_ngrams(["Film", "film"], 256, lowercase=False)
    assert not np.array_equal(cased[0], cased[1])


def test_hashed_ngrams_golden_values():
    # Pins the hash function: a change would silently invalidate every trained text model.
    # " ab " -> unigrams " " (twice), "a", "b": log1p(2) and log1p(1) with their signs, L2-normed.
    x = hashed_char_ngrams(["ab"], 16, ngram_range=(1, 1))[0]
    assert np.flatnonzero(x).tolist() == [4, 5, 14]
    raw = np.array([-np.log1p(1), -np.log1p(2), np.log1p(1)])
    np.testing.assert_allclose(x[[4, 5, 14]], raw / np.linalg.norm(raw), rtol=1e-6)


def test_hashed_ngrams_of_a_batch_are_each_texts_own(monkeypatch):
    """A batch is hashed in one pass over its texts joined: no n-gram may straddle two texts,
    wherever the batches split (each text's vector is what it gets alone)."""
    from ml import text

    texts = ["", "a", "ab", "Héllo wörld", "漢字 😀", "x" * 300, " spaced  out ", "b", "cd"] * 3
    alone = np.stack([hashed_char_ngrams([t], 64)[0] for t in texts])
    np.testing.assert_array_equal(hashed_char_ngrams(texts, 64), alone)
    for chars in (1, 5, 16):  # batches of one text, of a few, split anywhere
        monkeypatch.setattr(text, "BATCH_CHARS", chars)
        np.testing.assert_array_equal(hashed_char_ngrams(texts, 64), alone)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"dim": 0}, "dim"), ({"dim": 8, "ngram_range": (3, 1)}, "ngram_range")],
)
def test_hashed_ngrams_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        hashed_char_ngrams(["x"], **kwargs)
    with pytest.raises(ValueError, match="not a string"):
        hashed_char_ngrams([b"bytes"], 8)


def test_named_entities_and_rectangles_are_interfaces_too():
    ner = parse_interface(
        "<View><Labels name='l' toName='t'><Label value='PER'/><Label value='LOC' alias='L'/>"
        "</Labels><Text name='t' value='$text'/></View>"
    )
    assert (ner.kind, ner.from_name, ner.to_name, ner.data_key, ner.labels) == (
        "ner",
        "l",
        "t",
        "text",
        ("PER", "L"),
    )
    boxes = parse_interface(
        "<View><Image name='i' value='$img'/><RectangleLabels name='r' toName='i'>"
        "<Label value='Car'/></RectangleLabels></View>"
    )
    assert (boxes.kind, boxes.from_name, boxes.data_key, boxes.labels) == (
        "detection",
        "r",
        "img",
        ("Car",),
    )
    # Choices win when a config has both (classification was served before).
    both = parse_interface(
        "<View><Text name='t' value='$text'/><Labels name='l' toName='t'><Label value='A'/>"
        "</Labels><Choices name='c' toName='t'><Choice value='X'/></Choices></View>"
    )
    assert (both.kind, both.from_name) == ("text", "c")
