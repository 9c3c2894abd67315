"""Text side of text-to-image: a word tokenizer, a transformer text encoder and a tiny CLIP.

The diffusion model never sees words. It sees ``cond``, the per-token outputs (B, L, D) of a frozen
text encoder. That encoder is trained first, contrastively against a small image encoder on
captioned shapes (CLIP, Radford et al. 2021), so that its outputs tell colours, shapes, sizes,
positions and backgrounds apart. Token 0 of every sequence is <bos>; its output is the pooled text
vector. CLIP's loss trains only that pooled vector, and leaves every other token a bag of the
prompt's words; with ``phrase_weight`` > 0 each word's token also learns to name the words of its own
phrase (``phrase_loss``), so the token of "circle" in "a red circle and a blue square" says red.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from minidiff.checkpoint import load_checkpoint, load_into, pick_device, save_checkpoint
from minidiff.data import load_source
from minidiff.layers import TransformerBlock
from minidiff.words import split_words

SPECIALS = ("<pad>", "<bos>", "<eos>")  # special tokens, always ids 0, 1, 2
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
CLOSE_MATCHES = 3  # how many suggestions an unknown-word error lists (difflib.get_close_matches)

INIT_LOGIT_SCALE = math.log(1 / 0.07)  # Radford et al. 2021, sec. 2.5: temperature 0.07
MAX_LOGIT_SCALE = math.log(100.0)  # Radford et al. 2021, sec. 2.5: logits scaled by at most 100
INIT_STD = 0.02  # embedding init, Radford et al. 2019 (GPT-2)
LEARNING_RATE = 2e-3  # AdamW for a model this small; tuned on shapes
WEIGHT_DECAY = 0.05  # AdamW decoupled decay, Loshchilov & Hutter 2019
WARMUP_STEPS = 50  # linear warm-up, then cosine decay (Loshchilov & Hutter 2017)
KINDS = ("tiny_clip", "text_encoder")  # what a text checkpoint can hold
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "text_encoder"  # made by `python -m minidiff train`
EVAL_SEED = 10**9 + 7  # held-out pairs; training batches use seeds seed * 1_000_003 + step, far below


class Tokenizer:
    """Word-level tokenizer: ids 0, 1, 2 are <pad>, <bos>, <eos>; then one id per known word."""

    def __init__(self, words: Iterable[str]):
        words = [w for w in dict.fromkeys(words) if w not in SPECIALS]  # dedupe, keep order
        if bad := [w for w in words if split_words(w) != [w]]:
            raise ValueError(f"words {bad} are not single lower-case tokens (see split_words)")
        self.tokens = list(SPECIALS) + words
        self.ids = {w: i for i, w in enumerate(self.tokens)}

    @classmethod
    def from_captions(cls, captions: Iterable[str]) -> Tokenizer:
        """A tokenizer whose vocabulary is every word in ``captions``, sorted."""
        return cls(sorted({w for c in captions for w in split_words(c)}))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, prompts: list[str], max_len: int) -> Tensor:
        """Prompts -> LongTensor (B, max_len): <bos> words <eos> <pad>...; "" is <bos><eos><pad>...

        A prompt with more than ``max_len - 2`` words is refused (ValueError), never truncated, so
        no word is silently ignored. An unknown word raises a ValueError listing close matches.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a list of strings, got {prompts!r}; wrap one prompt as "
                             "[prompt]")
        if max_len < 2:
            raise ValueError(f"max_len={max_len} is too short; it must hold at least <bos> and <eos> (2)")
        tokens = torch.full((len(prompts), max_len), PAD_ID, dtype=torch.long)  # (B, L)
        for b, prompt in enumerate(prompts):
            ids = [BOS_ID] + [self._id(w, prompt) for w in split_words(prompt)] + [EOS_ID]
            if len(ids) > max_len:
                raise ValueError(f"prompt {prompt!r} is {len(ids)} tokens long with <bos> and <eos>, but the "
                                 f"text encoder takes at most max_len={max_len} ({max_len - 2} words); "
                                 "shorten it")
            tokens[b, : len(ids)] = torch.tensor(ids)
        return tokens

    def _id(self, word: str, prompt: str) -> int:
        if word not in self.ids:
            words = self.tokens[len(SPECIALS):]
            close = difflib.get_close_matches(word, words, n=CLOSE_MATCHES)  # none for "pink" or "tiny"
            hint = f"closest known words: {close}; " if close else ""
            raise ValueError(f"unknown word {word!r} in prompt {prompt!r}; {hint}every known word: "
                             f"{' '.join(words)}")
        return self.ids[word]

    def decode(self, tokens: Tensor) -> list[str]:
        """LongTensor (B, L) -> prompts, dropping special tokens (inverse of encode up to spacing)."""
        return [" ".join(self.tokens[i] for i in row.tolist() if i >= len(SPECIALS)).replace(" ,", ",")
                for row in tokens]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, stored in a checkpoint's ``extra``."""
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        """Inverse of to_dict; the ids are kept exactly."""
        if list(d["tokens"][: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"tokenizer dict must start with {SPECIALS}, got {d['tokens'][:3]}")
        return cls(d["tokens"])


@dataclass
class TextEncoderConfig:
    """Transformer text encoder: vocab_size words, sequences up to max_len, width dim."""

    vocab_size: int = 64
    max_len: int = 32  # the longest shapes caption is 24 words + <bos> + <eos>
    dim: int = 64
    layers: int = 2
    heads: int = 4
    mlp_ratio: int = 4  # Vaswani et al. 2017: feed-forward width 4 * dim

    @classmethod
    def from_preset(cls, name: str) -> TextEncoderConfig:
        """The text half of ``PRESETS[name]``."""
        return CLIPConfig.from_preset(name).text


@dataclass
class CLIPConfig:
    """A text encoder, an image encoder with these conv widths, and a joint space of embed_dim."""

    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    embed_dim: int = 64
    image_channels: tuple[int, ...] = (32, 64, 128)
    in_channels: int = 3  # 1 for grayscale data
    phrase_weight: float = 0.0  # weight of phrase_loss beside clip_loss; 0: plain CLIP, no phrase head

    @classmethod
    def from_preset(cls, name: str) -> CLIPConfig:
        """A copy of ``PRESETS[name]``."""
        if name not in PRESETS:
            raise ValueError(f"text encoder preset {name!r} is not known; choose one of {sorted(PRESETS)}")
        return cls.from_dict(dataclasses.asdict(PRESETS[name]))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPConfig:
        """Inverse of dataclasses.asdict (as stored in a checkpoint's JSON)."""
        return cls(TextEncoderConfig(**d["text"]), d["embed_dim"], tuple(d["image_channels"]),
                   d.get("in_channels", 3), d.get("phrase_weight", 0.0))


PRESETS = {"cpu": CLIPConfig(),  # the defaults above
           "gpu": CLIPConfig(TextEncoderConfig(dim=128, layers=4), embed_dim=128,
                             image_channels=(64, 128, 256))}


class TextEncoder(nn.Module):
    """Tokens (B, L) -> per-token features (B, L, D); out[:, 0] (the <bos> token) is the pooled vector.

    Bidirectional (no causal mask), so <bos> sees the whole prompt; pad tokens are masked out.
    """

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
        self.position_embedding = nn.Parameter(INIT_STD * torch.randn(config.max_len, config.dim))  # (L, D)
        nn.init.normal_(self.token_embedding.weight, std=INIT_STD)
        self.blocks = nn.ModuleList(TransformerBlock(config.dim, config.heads, config.mlp_ratio)
                                    for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, L) LongTensor with L <= max_len -> (B, L, D)."""
        if tokens.ndim != 2 or tokens.shape[1] > self.config.max_len:
            raise ValueError(f"tokens must have shape (B, L) with L <= max_len={self.config.max_len}, got "
                             f"{tuple(tokens.shape)}")
        if tokens.numel() and int(tokens.max()) >= self.config.vocab_size:
            raise ValueError(f"token id {int(tokens.max())} is outside vocab_size={self.config.vocab_size}; "
                             "was the prompt encoded with this encoder's tokenizer?")
        keep = tokens != PAD_ID  # (B, L)
        x = self.token_embedding(tokens) + self.position_embedding[: tokens.shape[1]]  # (B, L, D)
        for block in self.blocks:
            x = block(x, keep)
        return self.norm(x)  # (B, L, D)


class ImageEncoder(nn.Module):
    """Small CNN: images (B, C, H, W) -> (B, embed_dim). Keeps a 4x4 grid so position survives."""

    GRID = 4  # pooled spatial grid; finer than the 3x3 layout of shapes positions

    def __init__(self, embed_dim: int, channels: tuple[int, ...] = (32, 64, 128), in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1), nn.GELU()]
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.GELU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(self.GRID))
        self.head = nn.Linear(channels[-1] * self.GRID**2, embed_dim)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) in [-1, 1] -> (B, embed_dim)."""
        return self.head(rearrange(self.features(images), "b c h w -> b (c h w)"))  # (B, C * 16) -> (B, E)


class TinyCLIP(nn.Module):
    """Text encoder + image encoder + projections into one space (Radford et al. 2021), and its tokenizer."""

    def __init__(self, config: CLIPConfig, tokenizer: Tokenizer):
        super().__init__()
        if config.text.vocab_size != len(tokenizer):
            raise ValueError(f"config.text.vocab_size={config.text.vocab_size} but the tokenizer has "
                             f"{len(tokenizer)} tokens")
        self.config, self.tokenizer = config, tokenizer
        self.text_encoder = TextEncoder(config.text)
        self.text_projection = nn.Linear(config.text.dim, config.embed_dim, bias=False)
        self.image_encoder = ImageEncoder(config.embed_dim, config.image_channels, config.in_channels)
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))
        # one logit per vocabulary word: is it in this token's phrase? (phrase_loss; absent in plain CLIP)
        dim, vocab = config.text.dim, config.text.vocab_size
        self.phrase_head = nn.Linear(dim, vocab) if config.phrase_weight else None

    def encode_text(self, tokens: Tensor) -> Tensor:
        """tokens (B, L) -> unit-norm text embeddings (B, E) from the pooled <bos> output."""
        return self._pool(self.text_encoder(tokens))

    def _pool(self, features: Tensor) -> Tensor:
        return F.normalize(self.text_projection(features[:, 0]), dim=-1)  # (B, L, D) -> (B, E)

    def encode_image(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) -> unit-norm image embeddings (B, E)."""
        return F.normalize(self.image_encoder(images), dim=-1)  # (B, E)

    def embed_captions(self, captions: list[str]) -> Tensor:
        """Captions -> unit-norm text embeddings (B, E) on the model's device."""
        tokens = self.tokenizer.encode(captions, self.config.text.max_len)  # (B, L)
        return self.encode_text(tokens.to(self.logit_scale.device))

    def forward(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """-> (image embeddings (B, E), text embeddings (B, E), log logit scale clamped at log 100, the
        phrase head's logits (B, L, vocab_size) or None without one)."""
        features = self.text_encoder(tokens)  # (B, L, D)
        words = None if self.phrase_head is None else self.phrase_head(features)
        return (self.encode_image(images), self._pool(features), self.logit_scale.clamp(max=MAX_LOGIT_SCALE),
                words)


def clip_loss(img_emb: Tensor, txt_emb: Tensor, logit_scale: Tensor | float,
              same: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE (Oord et al. 2018; Radford et al. 2021, fig. 3) -> scalar.

    img_emb, txt_emb: (B, E), unit norm. logit_scale: the *log* of the inverse temperature.
    same: optional (B, B) bool, True where image i and caption j describe the same scene. Shapes
    batches hold duplicate scenes, and calling those negatives would punish correct matches, so
    the target of each row is uniform over its true matches. None means the identity (plain CLIP).
    """
    if img_emb.shape != txt_emb.shape or img_emb.ndim != 2:
        raise ValueError(f"img_emb and txt_emb must both be (B, E), got {tuple(img_emb.shape)} and "
                         f"{tuple(txt_emb.shape)}")
    scale = torch.as_tensor(logit_scale, dtype=img_emb.dtype, device=img_emb.device).exp()
    logits = scale * img_emb @ txt_emb.T  # (B, B): row = image, column = caption
    same = torch.eye(len(img_emb), dtype=torch.bool, device=img_emb.device) if same is None else same
    targets = same.to(logits.dtype)  # (B, B)
    # 1. images -> captions: cross-entropy of each row against its (soft) target
    loss_i = -(targets / targets.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    # 2. captions -> images: the same on columns
    loss_t = -(targets / targets.sum(0, keepdim=True) * logits.log_softmax(0)).sum(0).mean()
    return (loss_i + loss_t) / 2


def phrase_loss(word_logits: Tensor, tokens: Tensor, phrase: Tensor) -> Tensor:
    """Every word's token names the words of its own phrase: binary cross-entropy -> scalar.

    word_logits: (B, L, V), one logit per vocabulary word; tokens: (B, L) ids; phrase: (B, L) long,
    each token's phrase index (``captions.phrases``), -1 for tokens in none (<bos>, "and", padding).
    The target of token i is the multi-hot (V,) of the words whose phrase is i's; the loss sums over
    the vocabulary and averages over the tokens in a phrase. Read from "circle", "red" is a target in
    "a red circle and a blue square" and "blue" is not: a bag of words cannot score well.
    """
    if not (word_logits.shape[:2] == tokens.shape == phrase.shape):
        raise ValueError(f"word_logits (B, L, V), tokens (B, L) and phrase (B, L) must agree, got "
                         f"{tuple(word_logits.shape)}, {tuple(tokens.shape)}, {tuple(phrase.shape)}")
    real = phrase >= 0  # (B, L)
    same = (phrase[:, :, None] == phrase[:, None, :]) & real[:, None, :]  # (B, L, L): j in i's phrase
    target = (same.to(word_logits.dtype) @ F.one_hot(tokens, word_logits.shape[-1]).to(word_logits.dtype))
    bce = F.binary_cross_entropy_with_logits(word_logits, target.clamp(max=1), reduction="none").sum(-1)
    return (bce * real).sum() / real.sum().clamp(min=1)  # (B, L) -> mean over tokens in a phrase


def phrase_ids(phrases: list[list[int | None]], length: int) -> Tensor:
    """Per caption, the phrase of each word (``captions.phrases``) -> (B, length) long, aligned with
    ``Tokenizer.encode``: word i is token i + 1 (after <bos>); -1 for <bos>, <eos>, padding and None."""
    out = torch.full((len(phrases), length), -1, dtype=torch.long)
    for b, row in enumerate(phrases):
        out[b, 1: len(row) + 1] = torch.tensor([-1 if p is None else p for p in row], dtype=torch.long)
    return out


@torch.no_grad()
def retrieval_accuracy(clip: TinyCLIP, images: Tensor, captions: list[str], batch_size: int = 256,
                       source: Any = None) -> dict[str, float]:
    """Top-1 retrieval among N held-out pairs: images (N, C, H, W), captions (N).

    A retrieval counts as correct when the retrieved caption (or image) describes the same thing as
    the true one (``source.same``: the same scene for shapes paraphrases, the same caption otherwise).
    """
    if len(images) != len(captions):
        raise ValueError(f"need one caption per image, got {len(images)} images and {len(captions)} captions")
    clip.eval()
    device = clip.logit_scale.device
    img = torch.cat([clip.encode_image(x.to(device)) for x in images.split(batch_size)])  # (N, E)
    txt = torch.cat([clip.embed_captions(captions[i: i + batch_size])
                     for i in range(0, len(captions), batch_size)])
    sim = img @ txt.T  # (N, N)
    same = (source or load_source("shapes", images.shape[-1])).same(captions).to(device)  # (N, N)
    n = torch.arange(len(captions), device=device)
    return {"image_to_text": same[n, sim.argmax(1)].float().mean().item(),
            "text_to_image": same[sim.argmax(0), n].float().mean().item()}


def clip_stage(config: CLIPConfig | str, source: Any, steps: int, batch_size: int = 128,
               seed: int = 0, init: TinyCLIP | None = None, lr: float = LEARNING_RATE) -> Any:
    """The text stage for the one training loop: a TinyCLIP, its clip_loss, and source batches.

    The tokenizer's vocabulary is every word of the source's captions. Batch at step s is
    ``source.batch(batch_size, training.step_seed(seed, s, rank))``; pairs that describe the same thing
    are all positives (``source.same``). With ``config.phrase_weight`` > 0 and a source that knows its
    captions' phrases (``source.phrases``: shapes), the loss adds that weight times ``phrase_loss``.
    ``init``: start from this TinyCLIP's weights (same tokenizer and towers; a phrase head it lacks starts
    fresh) instead of from scratch, to fine-tune.
    """
    from minidiff.training import Stage, step_seed

    config = CLIPConfig.from_preset(config) if isinstance(config, str) else config
    tokenizer = Tokenizer(source.vocabulary())
    config = dataclasses.replace(config, in_channels=source.channels,
                                 text=dataclasses.replace(config.text, vocab_size=len(tokenizer)))
    if config.phrase_weight and not hasattr(source, "phrases"):
        config = dataclasses.replace(config, phrase_weight=0.0)  # no phrases to learn from: plain CLIP
    torch.manual_seed(seed)
    clip = TinyCLIP(config, tokenizer)
    if init is not None:
        if init.tokenizer.tokens != tokenizer.tokens:
            raise ValueError("init's tokenizer differs from this source's vocabulary; fine-tune it on the "
                             "data it was trained on")
        missing, unexpected = clip.load_state_dict(init.state_dict(), strict=False)
        if unexpected or any(not k.startswith("phrase_head.") for k in missing):
            raise ValueError(f"init does not fit config: missing {missing}, unexpected {unexpected}")

    def batch(step: int, rank: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        images, captions = source.batch(batch_size, step_seed(seed, step, rank))
        tokens = tokenizer.encode(captions, config.text.max_len)  # (B, L)
        tokens = tokens[:, : int((tokens != PAD_ID).sum(1).max())]  # (B, L'): drop all-pad columns
        phrase = phrase_ids(source.phrases(captions), tokens.shape[1]) if config.phrase_weight else tokens
        return images, tokens, source.same(captions), phrase

    def loss(model: nn.Module, b: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        images, tokens, same, phrase = (x.to(clip.logit_scale.device) for x in b)
        img, txt, scale, words = model(images, tokens)
        total = clip_loss(img, txt, scale, same=same)
        return total if words is None else total + config.phrase_weight * phrase_loss(words, tokens, phrase)

    return Stage("text_encoder", clip, loss, batch, steps, lr, batch_size,
                 min(WARMUP_STEPS, steps), WEIGHT_DECAY, grad_clip=1.0, seed=seed)


def train_clip(config: CLIPConfig | str = "cpu", steps: int = 1000, batch_size: int = 128, seed: int = 0,
               device: str = "auto", resolution: int = 32, progress: bool = True,
               source: Any = None) -> TinyCLIP:
    """Train a TinyCLIP with ``fit`` (shapes at ``resolution`` unless a ``source`` is given); eval mode.

    ``clip.history`` holds the loss per step, ``clip.train_seconds`` the wall time.
    """
    from minidiff.training import fit

    if steps < 1 or batch_size < 2:
        raise ValueError(f"need steps >= 1 and batch_size >= 2, got steps={steps}, batch_size={batch_size}")
    stage = clip_stage(config, source or load_source("shapes", resolution), steps, batch_size, seed)
    result = fit(stage, progress=progress, device=pick_device(device))
    clip = stage.model
    clip.history, clip.train_seconds = result["losses"], result["seconds"]
    return clip.eval()


def save_text_encoder(model: TinyCLIP | TextEncoder, tokenizer: Tokenizer, path: str | Path,
                      extra: dict | None = None) -> Path:
    """Save a TinyCLIP (both towers, so retrieval can be re-measured) or a bare TextEncoder.

    Writes ``path``.safetensors + ``path``.json; the tokenizer goes into the JSON's extra.
    """
    kind = "tiny_clip" if isinstance(model, TinyCLIP) else "text_encoder"
    info = {"kind": kind, "tokenizer": tokenizer.to_dict(), **(extra or {})}
    return save_checkpoint(path, model, model.config, info)


def _load(path: str | Path, want_clip: bool) -> tuple[TinyCLIP | TextEncoder, Tokenizer]:
    state, meta = load_checkpoint(path)
    extra = meta.get("extra", {})
    if extra.get("kind") not in KINDS or "tokenizer" not in extra:
        raise ValueError(f"{path} is not a text encoder checkpoint: extra.kind={extra.get('kind')!r} "
                         f"(allowed {KINDS}) and it must hold a tokenizer")
    tokenizer = Tokenizer.from_dict(extra["tokenizer"])
    if extra["kind"] == "tiny_clip":
        model: TinyCLIP | TextEncoder = TinyCLIP(CLIPConfig.from_dict(meta["config"]), tokenizer)
    elif want_clip:
        raise ValueError(f"{path} holds only a text encoder, not a TinyCLIP; use load_text_encoder")
    else:
        model = TextEncoder(TextEncoderConfig(**meta["config"]))
    return load_into(model, state, f"text encoder ({extra['kind']})").eval(), tokenizer


def load_clip(path: str | Path) -> TinyCLIP:
    """Load a TinyCLIP saved by save_text_encoder (tokenizer attached as ``.tokenizer``), in eval mode."""
    return _load(path, want_clip=True)[0]


def load_text_encoder(path: str | Path) -> tuple[TextEncoder, Tokenizer]:
    """Load the text encoder (from a TinyCLIP or a bare encoder checkpoint) and its tokenizer; eval mode."""
    model, tokenizer = _load(path, want_clip=False)
    return (model.text_encoder if isinstance(model, TinyCLIP) else model), tokenizer


@torch.no_grad()
def encode_prompts(encoder: TextEncoder, tokenizer: Tokenizer, prompts: list[str],
                   device: str | torch.device | None = None) -> Tensor:
    """Prompts -> frozen per-token embeddings ``cond`` (B, max_len, D); "" gives ``uncond``. Moves the
    encoder to ``device``.

    Rows of <pad> tokens are zero, which is how the U-Net's cross-attention tells padding from words.
    """
    device = next(encoder.parameters()).device if device is None else torch.device(device)
    tokens = tokenizer.encode(prompts, encoder.config.max_len).to(device)  # (B, L)
    return encoder.to(device).eval()(tokens) * (tokens != PAD_ID).unsqueeze(-1)  # (B, L, D)
