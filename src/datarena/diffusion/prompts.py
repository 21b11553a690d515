"""Captions for the 20 PASCAL VOC classes, each with its class prompt appended.

A caption names one or more classes ("a dog on a sofa"); the class names are appended after a
semicolon as the class prompt ("a dog on a sofa; dog sofa"), whose tokens' cross-attention maps
become the masks. Compound VOC names are written as words ("dining table", "potted plant",
"tv monitor"). Captions come from templates (seeded) or from a user's text/JSONL file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datarena.data.segmentation import VOC_CLASSES
from datarena.errors import ConfigError

# VOC class id -> the words used in prompts
CLASS_WORDS: dict[int, str] = {
    i: {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv monitor"}.get(name, name)
    for i, name in enumerate(VOC_CLASSES)
    if i > 0
}
SYNONYMS: dict[str, int] = {
    **{w: i for i, w in CLASS_WORDS.items()},
    "airplane": 1, "plane": 1, "bike": 2, "ship": 4, "automobile": 7, "kitten": 8, "chairs": 9,
    "table": 11, "puppy": 12, "pony": 13, "motorcycle": 14, "man": 15, "woman": 15, "people": 15,
    "child": 15, "plant": 16, "lamb": 17, "couch": 18, "tv": 20, "television": 20, "monitor": 20,
}

SINGLE = (
    "a photo of a {a}", "a {a} in the {place}", "a close-up photo of a {a}", "a {a} on a sunny day",
    "a blurry photo of a {a} in the {place}", "a {a} seen from the side",
)
PAIR = (
    "a photo of a {a} and a {b}", "a {a} next to a {b} in the {place}", "a {a} with a {b}",
    "a {b} behind a {a}",
)
PLACES = ("street", "park", "kitchen", "living room", "field", "city", "garden", "countryside", "harbour", "room")


@dataclass(frozen=True)
class Prompt:
    caption: str
    classes: tuple[int, ...]  # VOC class ids named by the class prompt, in order

    @property
    def class_prompt(self) -> str:
        return " ".join(CLASS_WORDS[c] for c in self.classes)

    @property
    def text(self) -> str:
        return f"{self.caption}; {self.class_prompt}"


def template_prompt(rng: np.random.Generator, classes: list[int] | None = None, multi_rate: float = 0.3) -> Prompt:
    """One seeded caption: a single class, or with probability multi_rate a pair of classes."""
    pool = classes or list(CLASS_WORDS)
    place = PLACES[rng.integers(len(PLACES))]
    if len(pool) > 1 and rng.random() < multi_rate:
        a, b = (int(x) for x in rng.choice(pool, size=2, replace=False))
        text = PAIR[rng.integers(len(PAIR))].format(a=CLASS_WORDS[a], b=CLASS_WORDS[b], place=place)
        return Prompt(text, (a, b))
    a = int(pool[rng.integers(len(pool))])
    return Prompt(SINGLE[rng.integers(len(SINGLE))].format(a=CLASS_WORDS[a], place=place), (a,))


def classes_in(caption: str) -> tuple[int, ...]:
    """VOC classes a caption names (compound names first), in order of appearance."""
    text = caption.lower()
    found: list[tuple[int, int]] = []
    taken = np.zeros(len(text) + 1, dtype=bool)
    for word, cid in sorted(SYNONYMS.items(), key=lambda kv: -len(kv[0])):
        for m in re.finditer(rf"\b{re.escape(word)}s?\b", text):
            if not taken[m.start() : m.end()].any():
                taken[m.start() : m.end()] = True
                found.append((m.start(), cid))
    ordered: list[int] = []
    for _, cid in sorted(found):
        if cid not in ordered:
            ordered.append(cid)
    return tuple(ordered)


def read_captions(path: str | Path) -> list[Prompt]:
    """A .txt file (one caption per line; classes found by name) or .jsonl
    ({"caption": ..., "classes": ["dog", "sofa"]}; classes optional)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"caption file {path} does not exist.")
    prompts, problems = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if path.suffix == ".jsonl":
            try:
                item = json.loads(line)
                caption = item["caption"]
            except (json.JSONDecodeError, KeyError, TypeError):
                problems.append(f"line {n}: expected a JSON object with a 'caption'")
                continue
            if "classes" in item:
                unknown = [c for c in item["classes"] if str(c).lower() not in SYNONYMS and c not in VOC_CLASSES]
                if unknown:
                    problems.append(f"line {n}: unknown classes {unknown}")
                    continue
                ids = tuple(SYNONYMS.get(str(c).lower(), VOC_CLASSES.index(c) if c in VOC_CLASSES else 0) for c in item["classes"])
            else:
                ids = classes_in(caption)
        else:
            caption, ids = line, classes_in(line)
        if not ids:
            problems.append(f"line {n}: names none of the 20 VOC classes: {caption[:60]!r}")
            continue
        prompts.append(Prompt(caption, ids))
    if problems:
        raise ConfigError(f"{path} has {len(problems)} unusable captions:\n  " + "\n  ".join(problems[:20]))
    if not prompts:
        raise ConfigError(f"{path} holds no captions.")
    return prompts


def prompt_for(index: int, seed: int, captions: list[Prompt] | None = None, classes: list[int] | None = None) -> Prompt:
    """The prompt of image `index`: depends only on (seed, index), so shards agree."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 1]))
    if captions:
        return captions[int(rng.integers(len(captions)))]
    return template_prompt(rng, classes)


def image_seed(index: int, seed: int) -> int:
    return int(np.random.SeedSequence([seed, index, 2]).generate_state(1, dtype=np.uint64)[0] % (2**63))


def class_token_spans(tokenizer, prompt: Prompt, max_length: int | None = None) -> list[list[int]]:
    """Token positions (in the padded, BOS-first sequence) of each class of the class prompt."""
    max_length = max_length or tokenizer.model_max_length
    ids = tokenizer(prompt.text, truncation=True, max_length=max_length)["input_ids"]
    spans: list[list[int]] = []
    cursor = len(ids) - 1  # before EOS; class words are the last words of the prompt
    for cid in reversed(prompt.classes):
        word_ids = tokenizer(CLASS_WORDS[cid], add_special_tokens=False)["input_ids"]
        start = cursor - len(word_ids)
        if start < 1 or ids[start:cursor] != word_ids:
            raise ConfigError(f"class word {CLASS_WORDS[cid]!r} was cut from the prompt {prompt.text!r} "
                              f"(longer than {max_length} tokens); shorten the caption.")
        spans.append(list(range(start, cursor)))
        cursor = start
    return spans[::-1]


def class_prompt_positions(tokenizer, prompt: Prompt) -> tuple[list[int], list[list[int]]]:
    """The class prompt encoded alone ("dog sofa"): its class-token positions, and each class's
    span as indices into that list (the columns of the class-only cross-attention)."""
    alone = Prompt("", prompt.classes)
    ids = tokenizer(alone.class_prompt, truncation=True, max_length=tokenizer.model_max_length)["input_ids"]
    spans, cursor = [], 1  # after BOS
    for cid in prompt.classes:
        word_ids = tokenizer(CLASS_WORDS[cid], add_special_tokens=False)["input_ids"]
        if ids[cursor:cursor + len(word_ids)] != word_ids:
            raise ConfigError(f"class prompt {alone.class_prompt!r} does not tokenise as its words")
        spans.append(list(range(cursor, cursor + len(word_ids))))
        cursor += len(word_ids)
    positions = [t for span in spans for t in span]
    return positions, [[positions.index(t) for t in span] for span in spans]
