"""The tokenized export: each conversation rendered with a student tokenizer's own chat template,
with the token span of every message, so every token carries its turn, its label and its weight.

Spans come from *incremental rendering*: the conversation's first i+1 messages must render to a
text that starts with the render of its first i, and the difference is message i's span (for an
assistant message, the part after the template's generation prompt is what it is trained on; the
role header before it is the prompt). The full text is tokenized once, with offsets, and every
token is assigned to the message whose span holds it; a token that straddles two messages, or a
template whose renders are not prefixes of each other (e.g. one that drops the reasoning of all
but the last assistant turn), cannot be split cleanly and is a :class:`TemplateError` naming the
trajectory and the message. The spans add up to the full render by construction, and every token
is checked to lie inside one of them.

What a template can show is probed once (:func:`probe_template`): a tool role, structured tool
calls, a ``reasoning_content`` field, a ``tools`` list. A template without a tool role (Gemma's)
gets tool calls as ``<tool_call>{json}</tool_call>`` text in the assistant message, observations
as user messages in ``<tool_response>`` tags, and the tool schemas in the system text; the
manifest and the card say so.

transformers is imported lazily: the rest of the export runs without it (``pip install
'hopforge[train]'`` adds it).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from hopforge.errors import ConfigError, HopforgeError
from hopforge.storage.tools import TOOL_SCHEMAS

IGNORE_INDEX = -100  # labels outside the assistant's tokens (the value PyTorch's cross-entropy ignores)
# Chat templates shipped for GGUFs that carry none, by GGUF `general.architecture`.
BUNDLED_TEMPLATES = {"gemma3": "gemma3.chat_template.jinja"}

TOKEN_COLUMNS = [
    ("input_ids", pa.list_(pa.int32())),
    ("labels", pa.list_(pa.int32())),  # input_ids on assistant tokens, -100 elsewhere (not shifted)
    ("loss_weights", pa.list_(pa.float32())),  # the turn's loss_weight on its assistant tokens, 0 elsewhere
    ("turn_index", pa.list_(pa.int32())),  # the source turn of every token; -1 for synthesised messages
    ("num_tokens", pa.int32()),
    ("assistant_tokens", pa.int32()),
    ("weighted_tokens", pa.int32()),  # assistant tokens with loss_weight > 0
]


class TemplateError(HopforgeError):
    """A chat template cannot render a conversation, or its render cannot be split into messages."""


# ---------------------------------------------------------------- loading


def cache_dir() -> Path:
    base = os.environ.get("HOPFORGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hopforge")
    return Path(base) / "tokenizers"


def gguf_architecture(path: str | Path) -> str | None:
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    field_ = GGUFReader(str(path)).fields.get("general.architecture")
    return field_.contents() if field_ is not None else None


def load_tokenizer(spec: str | Path) -> Any:
    """A transformers tokenizer from a directory or hub-layout path, or from a ``.gguf`` file.

    A GGUF's tokenizer is converted once (27 s for Gemma 3's 262k vocabulary on 2 cores) and
    cached under ``$HOPFORGE_CACHE/tokenizers/<key>`` (default ``~/.cache/hopforge``), keyed by
    the file's path, size and mtime. Nothing is fetched from a hub: a missing path is an error."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError("the tokenized export needs transformers: pip install 'hopforge[train]'") from None
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(f"export.tokenizer: {spec} does not exist (a tokenizer directory or a .gguf file; "
                          "nothing is downloaded)")
    if path.is_file() and path.suffix == ".gguf":
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        cached = cache_dir() / f"{path.stem}-{key}"
        if (cached / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(str(cached))
        try:
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        except ImportError as e:
            raise ConfigError(f"loading a tokenizer from {path} needs the gguf package ({e})") from None
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        tok.save_pretrained(str(tmp))
        try:
            tmp.rename(cached)
        except OSError:  # another process cached it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        return tok
    target = path.parent if path.is_file() else path
    try:
        return AutoTokenizer.from_pretrained(str(target))
    except (OSError, ValueError) as e:
        raise ConfigError(f"export.tokenizer: cannot load a tokenizer from {spec}: {e}") from None


def resolve_template(tok: Any, spec: str | Path, chat_template: str | None) -> tuple[str, str]:
    """(template text, where it came from): ``chat_template`` (a file or a bundled name), else the
    tokenizer's own, else the bundled template of the GGUF's architecture."""
    if chat_template:
        p = Path(chat_template).expanduser()
        if p.is_file():
            return p.read_text(encoding="utf-8"), f"file {p}"
        if chat_template in BUNDLED_TEMPLATES:
            return _bundled(chat_template), f"bundled {chat_template} (hopforge/resources)"
        raise ConfigError(f"export.chat_template: {chat_template} is neither a file nor a bundled template "
                          f"({', '.join(BUNDLED_TEMPLATES)})")
    own = getattr(tok, "chat_template", None)
    if isinstance(own, dict):
        own = own.get("default") or next(iter(own.values()), None)
    if own:
        return own, "the tokenizer's own"
    p = Path(spec)
    arch = gguf_architecture(p) if p.suffix == ".gguf" else None
    if arch in BUNDLED_TEMPLATES:
        return _bundled(arch), f"bundled {arch} (the GGUF carries no chat template)"
    raise ConfigError(f"the tokenizer {spec} has no chat template; pass --chat-template FILE "
                      f"(or a bundled one: {', '.join(BUNDLED_TEMPLATES)})")


def _bundled(name: str) -> str:
    return resources.files("hopforge.resources").joinpath(BUNDLED_TEMPLATES[name]).read_text(encoding="utf-8")


# ---------------------------------------------------------------- what the template can show


@dataclass(frozen=True)
class TemplateInfo:
    source: str
    tool_role: bool  # renders role "tool" messages
    tool_calls: bool  # renders an assistant's structured tool_calls
    reasoning_field: bool  # renders an assistant's reasoning_content
    tools_param: bool  # renders the `tools` list

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "tool_role": self.tool_role, "tool_calls": self.tool_calls,
                "reasoning": "reasoning_content" if self.reasoning_field else "<think> tags in content",
                "tools": "template tools list" if self.tools_param else "JSON in the system text",
                "observations": "tool messages" if self.tool_role else "user messages in <tool_response> tags",
                "calls": "structured tool_calls" if self.tool_calls else "<tool_call>{json}</tool_call> text"}


_PROBE_TOOL = {"type": "function", "function": {"name": "probe_tool", "description": "PROBE_DESCRIPTION",
                                                "parameters": {"type": "object", "properties": {}}}}


def _render(tok: Any, template: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
            add_generation_prompt: bool = False) -> str:
    return tok.apply_chat_template(messages, tools=tools, chat_template=template, tokenize=False,
                                   add_generation_prompt=add_generation_prompt)


def probe_template(tok: Any, template: str, source: str) -> TemplateInfo:
    """Render a probe conversation to learn which fields the template shows."""
    call = {"id": "call_probe", "type": "function", "function": {"name": "probe_tool", "arguments": {"q": "PROBE_ARG"}}}
    full = [{"role": "system", "content": "PROBE_SYSTEM"}, {"role": "user", "content": "PROBE_USER"},
            {"role": "assistant", "content": "PROBE_CONTENT", "reasoning_content": "PROBE_REASONING",
             "tool_calls": [call]},
            {"role": "tool", "content": "PROBE_OBSERVATION", "tool_call_id": "call_probe", "name": "probe_tool"}]
    try:
        out = _render(tok, template, full, [_PROBE_TOOL])
        tool_role = "PROBE_OBSERVATION" in out
    except Exception:  # noqa: BLE001 - a template that refuses the tool role raises whatever it likes
        out, tool_role = "", False
    if not tool_role:
        try:
            out = _render(tok, template, full[:3], [_PROBE_TOOL])
        except Exception:  # noqa: BLE001
            try:
                out = _render(tok, template, [full[1], {**full[2], "tool_calls": None}], None)
            except Exception as e:  # noqa: BLE001
                raise TemplateError(f"chat template ({source}) cannot render a user and an assistant message: "
                                    f"{type(e).__name__}: {e}") from None
    return TemplateInfo(source=source, tool_role=tool_role, tool_calls=tool_role and "PROBE_ARG" in out,
                        reasoning_field="PROBE_REASONING" in out, tools_param="PROBE_DESCRIPTION" in out)


# ---------------------------------------------------------------- messages -> template input


@dataclass
class ChatInput:
    messages: list[dict[str, Any]]
    weights: list[float]  # per message
    turns: list[int]  # per message: source turn index, -1 for synthesised
    tools: list[dict[str, Any]] | None


def _call_json(name: str, arguments: dict[str, Any]) -> str:
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def chat_input(msgs: Sequence[dict[str, Any]], info: TemplateInfo) -> ChatInput:
    """Turn exported messages (the trl layout: role, content, reasoning_content, tool_calls with JSON
    ``arguments``, tool_call_id, name, loss_weight) into what the template renders."""
    out: list[dict[str, Any]] = []
    weights: list[float] = []
    turns: list[int] = []
    for m in msgs:
        role, content = m["role"], m.get("content") or ""
        weight = float(m.get("loss_weight") or 0.0) if role == "assistant" else 0.0
        turn = m.get("turn_index")
        turn = -1 if turn is None else int(turn)
        if role == "assistant":
            calls = [(c["function"]["name"], _arguments(c["function"]["arguments"]), c.get("id"))
                     for c in m.get("tool_calls") or []]
            reasoning = m.get("reasoning_content")
            d: dict[str, Any] = {"role": "assistant"}
            if reasoning and not info.reasoning_field:
                content = f"<think>\n{reasoning}\n</think>\n{content}" if content else f"<think>\n{reasoning}\n</think>"
            elif reasoning:
                d["reasoning_content"] = reasoning
            if calls and info.tool_calls:
                d["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": n, "arguments": a}}
                                   for n, a, cid in calls]
            elif calls:
                text = "\n".join(f"<tool_call>\n{_call_json(n, a)}\n</tool_call>" for n, a, _ in calls)
                content = f"{content}\n{text}" if content else text
            d["content"] = content
            out.append(d)
        elif role == "tool" and info.tool_role:
            out.append({"role": "tool", "content": content, "tool_call_id": m.get("tool_call_id"),
                        "name": m.get("name")})
        else:
            if role == "tool":
                role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
            if role == "system" and not info.tools_param:
                content = f"{content}\n\n{tool_prompt()}"
            if out and role == "user" and out[-1]["role"] == "user" and not info.tool_role:
                # Templates without a tool role usually insist on alternating roles: observations that
                # follow one another (or a user message) go into one user message. They weigh 0 alike.
                out[-1]["content"] += "\n\n" + content
                continue
            out.append({"role": role, "content": content})
        weights.append(weight)
        turns.append(turn)
    return ChatInput(out, weights, turns, TOOL_SCHEMAS if info.tools_param else None)


def tool_prompt() -> str:
    """The tool schemas as system text, for templates that cannot render a tools list."""
    return ("You can call these tools:\n<tools>\n" + "\n".join(json.dumps(t, ensure_ascii=False) for t in TOOL_SCHEMAS)
            + "\n</tools>\nCall one per turn as <tool_call>\n{\"name\": ..., \"arguments\": {...}}\n</tool_call>; "
              "each result comes back in <tool_response> tags.")


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": value}


# ---------------------------------------------------------------- render and split


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    loss_weights: list[float]
    turn_index: list[int]
    text: str = field(repr=False, default="")

    @property
    def assistant_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    @property
    def weighted_tokens(self) -> int:
        return sum(1 for w in self.loss_weights if w > 0)


def render_and_split(tok: Any, template: str, chat: ChatInput, *, what: str) -> Tokenized:
    """Render ``chat`` and tokenize it, every token assigned to one message (see the module docstring).

    ``what`` names the conversation (trajectory and window) in errors."""
    msgs, tools = chat.messages, chat.tools
    bounds: list[tuple[int, int, int]] = []  # per message: (start, trained_from, end) in characters
    prev = ""
    for i, m in enumerate(msgs):
        try:
            text = _render(tok, template, msgs[: i + 1], tools)
        except Exception as e:  # noqa: BLE001 - jinja raise_exception and friends
            raise TemplateError(f"{what}: the chat template cannot render messages 0..{i} (message {i} is "
                                f"{m['role']}): {type(e).__name__}: {e}") from None
        if not text.startswith(prev):
            raise TemplateError(f"{what}: the chat template cannot be split into messages: the render of messages "
                                f"0..{i} does not start with the render of messages 0..{i - 1} (the template "
                                f"renders earlier messages differently once message {i} ({m['role']}) follows)")
        start = trained = len(prev)
        if m["role"] == "assistant":
            try:
                gen = _render(tok, template, msgs[:i], tools, add_generation_prompt=True)
            except Exception:  # noqa: BLE001 - no generation prompt: the whole segment is the assistant's
                gen = prev
            if gen.startswith(prev) and text.startswith(gen):
                trained = len(gen)
        bounds.append((start, trained, len(text)))
        prev = text
    enc = tok(prev, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    starts = [b[0] for b in bounds]
    labels: list[int] = []
    weights: list[float] = []
    turn_of: list[int] = []
    counted = [0] * len(msgs)
    for tid, (s, e) in zip(ids, offsets, strict=True):
        k = max(0, bisect.bisect_right(starts, s) - 1)
        start, trained, end = bounds[k]
        if e > end and s < end:
            raise TemplateError(f"{what}: token {tid} ({prev[s:e]!r}) straddles messages {k} and {k + 1}: "
                                "the render cannot be split cleanly at message boundaries")
        counted[k] += 1
        turn_of.append(chat.turns[k])
        if msgs[k]["role"] == "assistant" and e > trained:
            labels.append(int(tid))
            weights.append(chat.weights[k])
        else:
            labels.append(IGNORE_INDEX)
            weights.append(0.0)
    if sum(counted) != len(ids):  # pragma: no cover - every token is assigned above
        raise TemplateError(f"{what}: {len(ids) - sum(counted)} tokens lie outside every message span")
    return Tokenized(ids, labels, weights, turn_of, prev)


class TokenFormatter:
    """The ``tokens`` export format: a callable from exported (trl-layout) messages to a row's token
    columns, with counts for the manifest."""

    def __init__(self, spec: str | Path, chat_template: str | None = None, *, tokenizer: Any = None) -> None:
        self.spec = str(spec)
        self.tok = tokenizer if tokenizer is not None else load_tokenizer(spec)
        self.template, source = resolve_template(self.tok, spec, chat_template)
        self.info = probe_template(self.tok, self.template, source)
        self.counts = {"tokens": 0, "assistant_tokens": 0, "weighted_tokens": 0, "max_tokens": 0}

    def __call__(self, msgs: Sequence[dict[str, Any]], *, what: str) -> dict[str, Any]:
        t = render_and_split(self.tok, self.template, chat_input(msgs, self.info), what=what)
        n, a, w = len(t.input_ids), t.assistant_tokens, t.weighted_tokens
        self.counts["tokens"] += n
        self.counts["assistant_tokens"] += a
        self.counts["weighted_tokens"] += w
        self.counts["max_tokens"] = max(self.counts["max_tokens"], n)
        return {"input_ids": t.input_ids, "labels": t.labels, "loss_weights": t.loss_weights,
                "turn_index": t.turn_index, "num_tokens": n, "assistant_tokens": a, "weighted_tokens": w}

    def manifest(self) -> dict[str, Any]:
        return {"tokenizer": self.spec, "tokenizer_class": type(self.tok).__name__,
                "vocab_size": len(self.tok), "chat_template": self.info.describe(),
                "template_sha256": hashlib.sha256(self.template.encode()).hexdigest()[:16],
                "labels": "input_ids on assistant tokens after the template's generation prompt, -100 elsewhere "
                          "(unshifted; the model shifts)",
                "loss_weights": "the turn's loss_weight on its assistant tokens, 0 elsewhere",
                **self.counts}
