"""Model classes tunelab defines itself, and the pooling they share.

- ``MeanPoolingClassifier``: a BERT encoder, mean pooling + L2 norm, and a linear head on the detached
  sentence embedding (the ``embedding_classification`` task's SetFit-style model).
- ``DualEncoder``: a shared-weight encoder bi-encoder holding its candidate set (the ``retrieval`` task's).
- ``LanguageModel``: picks the LM head class a checkpoint needs (causal for decoders, masked for
  encoders), so the ``lm_pretrain`` task can name one model class.

They live here, beside every other loader, because overriding ``from_pretrained`` is loading code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertModel,
    BertPreTrainedModel,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from transformers.utils.generic import ModelOutput

from tunelab.errors import ConfigError

HEAD_CONFIG = ("label_descriptions", "similarity_scale", "head_lr_multiplier")  # the head's config keys
CANDIDATE_BATCH = 64  # candidates embedded per forward when a DualEncoder (re)builds its candidate matrix
_CAUSAL_TYPES = frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) - frozenset(MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the non-padding token vectors, L2-normalised (sentence-transformers' sentence embedding).

    (B, T, H), (B, T) -> (B, H); unit norm, so a dot product is the cosine similarity.
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


@dataclass
class EmbeddingOutput(ModelOutput):
    """Head logits (B, C) and the normalised sentence embeddings (B, H) they were computed from."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None


class MeanPoolingClassifier(BertPreTrainedModel):  # type: ignore[no-untyped-call]  # HF __init_subclass__
    """A BERT encoder, mean pooling + L2 norm, and a linear head on the detached embedding.

    ``config.label_descriptions`` (from the task params) initialise a head the checkpoint lacks
    (``init_missing``, which ``models.load.load_pretrained`` calls after every load, a bi-encoder's
    tower included), so a fresh model is the zero-shot classifier on its encoder and a saved one keeps
    its trained head.
    """

    own_settings = HEAD_CONFIG  # config keys this class sets itself: BertConfig has no such fields

    def __init__(self, config: Any) -> None:
        if config.model_type != "bert":
            raise ConfigError(
                "model.name_or_path: embedding_classification pools a BERT encoder, not a "
                f"{config.model_type} model; use e.g. minilm-l6"
            )
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()  # type: ignore[no-untyped-call]  # unannotated in transformers

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **targets: Any,
    ) -> EmbeddingOutput:
        """Embed and classify; ``targets`` (labels, pair targets) are the task loss's, not the model's."""
        hidden = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
        ).last_hidden_state
        assert attention_mask is not None, "mean pooling needs the attention mask"
        embeddings = mean_pool(hidden, attention_mask)  # (B, H), unit norm
        multiplier = self.config.head_lr_multiplier
        logits = F.linear(
            embeddings.detach(), self.classifier.weight * multiplier, self.classifier.bias * multiplier
        )
        return EmbeddingOutput(logits=logits, embeddings=embeddings)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Load the encoder (and the head if saved); the head's settings go on the config first.

        transformers would hand them to ``__init__`` (BertConfig has no such fields). Returns what
        transformers' ``from_pretrained`` returns (hence ``Any``: the base class annotates one form).
        """
        path = pretrained_model_name_or_path
        head = {key: kwargs.pop(key) for key in cls.own_settings if key in kwargs}
        labels = {key: kwargs.pop(key) for key in ("num_labels", "id2label", "label2id") if key in kwargs}
        config = AutoConfig.from_pretrained(path, **labels)  # the directory's own type: __init__ checks it
        config.update(head)
        return super().from_pretrained(path, *args, config=config, **kwargs)

    @classmethod
    def from_config(cls, config: Any) -> MeanPoolingClassifier:
        """Random-init model of ``config`` (artifact skeletons)."""
        return cls(config)

    @staticmethod
    def init_missing(model: MeanPoolingClassifier, missing_keys: Any, path: Any) -> None:
        """A head the loaded weights lacked starts at the label descriptions, embedded by the encoder."""
        if any(key.startswith("classifier.") for key in missing_keys):
            init_head(model, AutoTokenizer.from_pretrained(path))


@torch.no_grad()
def init_head(model: MeanPoolingClassifier, tokenizer: Any) -> None:
    """Head rows = ``scale`` * embedding of each label's description (default: its name), bias 0.

    Stored divided by the head multiplier, which the forward applies.
    """
    cfg = model.config
    was_training = model.training
    model.train(False)
    id2label = cast("dict[int, str]", cfg.id2label)  # int ids: built by label_maps, keys cast on load
    names = [id2label[i] for i in range(len(id2label))]
    texts = [cfg.label_descriptions.get(name, name) for name in names]
    enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    embeddings = model(**enc).embeddings  # (C, H)
    model.train(was_training)
    model.classifier.weight.copy_(embeddings * cfg.similarity_scale / cfg.head_lr_multiplier)
    model.classifier.bias.zero_()


@dataclass
class RetrievalOutput(ModelOutput):
    """Sentence embeddings (B, H); in eval mode also every stored candidate's cosine and logit (B, N)."""

    loss: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class DualEncoder(PreTrainedModel):
    """A shared-weight ("two-tower") encoder bi-encoder that ranks the candidate set it stores.

    Any encoder ``AutoModel`` builds (MiniLM/BERT, tunelab's Chinese ModernBERT) embeds queries and
    candidates alike: mean pooling + L2 norm (``mean_pool``). The candidates' token ids are persistent
    buffers (``config.num_candidates`` x ``config.candidate_length``), saved with the weights, so a
    saved model ranks its own corpus with no other file. In training mode the forward only embeds (the
    task's loss pairs the rows); in eval mode it also scores every candidate: ``scores`` = cosine,
    ``logits`` = ``config.similarity_scale`` x cosine (the in-batch loss's logits).

    The candidate embeddings are computed once and cached until the weights may have changed: entering
    training mode drops the cache (the fused AdamW step does not bump tensors' version counters), and
    the cache is keyed on every parameter's identity, storage and version counter (a load, a device
    move, pruning, int8 conversion or an in-place edit change it). So serving embeds the corpus on its
    first request only and evaluation never scores against stale vectors. They are not saved: stored
    vectors would silently disagree with weights that an export step (int8, pruning) changed.
    """

    config_class = PretrainedConfig
    base_model_prefix = "encoder"
    own_settings = ("similarity_scale", "candidate_max_length")  # set on any encoder's config here

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.encoder = AutoModel.from_config(config)  # type: ignore[no-untyped-call]  # unannotated in HF
        if getattr(self.encoder, "pooler", None) is not None:  # BERT's [CLS] pooler: unused by mean pooling
            self.encoder.pooler = None
        shape = (getattr(config, "num_candidates", 0), getattr(config, "candidate_length", 0))
        self.register_buffer("candidate_input_ids", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("candidate_attention_mask", torch.zeros(shape, dtype=torch.long))
        self._cache: tuple[tuple[tuple[int, int, int], ...], torch.Tensor] | None = None
        self.post_init()  # type: ignore[no-untyped-call]  # unannotated in transformers

    def train(self, mode: bool = True) -> DualEncoder:
        """Set the mode; training mode drops the cached candidate embeddings (the next steps change them)."""
        if mode:
            self._cache = None
        return cast("DualEncoder", super().train(mode))

    def embed(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) tokens -> (B, H) unit-norm sentence embeddings."""
        given = {"input_ids": input_ids, "token_type_ids": token_type_ids, "inputs_embeds": inputs_embeds}
        inputs = {key: value for key, value in given.items() if value is not None}  # ModernBERT: no types
        hidden = self.encoder(attention_mask=attention_mask, **inputs).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **targets: Any,
    ) -> RetrievalOutput:
        """Embed the rows; in eval mode score them against every candidate. ``targets`` are the loss's."""
        assert attention_mask is not None, "mean pooling needs the attention mask"
        embeddings = self.embed(input_ids, attention_mask, token_type_ids, inputs_embeds)  # (B, H)
        if self.training:
            return RetrievalOutput(embeddings=embeddings)
        scores = embeddings @ self.candidate_embeddings().to(embeddings.dtype).T  # (B, N) cosine
        return RetrievalOutput(
            embeddings=embeddings, scores=scores, logits=scores * self.config.similarity_scale
        )

    @torch.no_grad()
    def candidate_embeddings(self) -> torch.Tensor:
        """(N, H) unit-norm embeddings of the stored candidates, recomputed when any parameter changed."""
        key = tuple((id(p), p.data_ptr(), p._version) for p in self.parameters())
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._embed_candidates())
        return self._cache[1]

    def _embed_candidates(self) -> torch.Tensor:
        """Candidates embedded in length-sorted chunks, each cut to its longest row (little padding)."""
        ids, mask = (
            cast(torch.Tensor, self.candidate_input_ids),
            cast(torch.Tensor, self.candidate_attention_mask),
        )
        lengths = mask.sum(-1)
        out = torch.zeros(len(ids), self.config.hidden_size, device=ids.device)
        for chunk in torch.split(torch.argsort(lengths, descending=True), CANDIDATE_BATCH):
            width = int(lengths[chunk].max())
            out[chunk] = self.embed(ids[chunk, :width], mask[chunk, :width]).float()
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """A saved DualEncoder as stored, or a pretrained encoder with the labels as its candidates.

        Labels given (the candidate texts, in id order) are tokenised by the directory's tokenizer to
        ``candidate_max_length`` into the candidate buffers. A pretrained encoder (a base model or an
        MLM checkpoint: ``AutoModel`` drops any head) becomes the bi-encoder's shared tower.
        Returns the model, or ``(model, loading info)`` with ``output_loading_info=True``.
        """
        path = pretrained_model_name_or_path
        want_info = kwargs.pop("output_loading_info", False)
        id2label = kwargs.pop("id2label", None)
        for key in ("num_labels", "label2id"):  # the candidates live in the buffers, not in config.json
            kwargs.pop(key, None)
        extra = {key: kwargs.pop(key) for key in cls.own_settings if key in kwargs}
        config = AutoConfig.from_pretrained(path, trust_remote_code=kwargs.get("trust_remote_code", False))
        if is_causal(config) or config.is_encoder_decoder:
            raise ConfigError(
                f"model.name_or_path: retrieval embeds with an encoder, not a {config.model_type} "
                "decoder; use e.g. minilm-l6"
            )
        config.update(extra)
        tokens = None
        if id2label is not None:
            texts = [id2label[i] for i in range(len(id2label))]
            tokens = AutoTokenizer.from_pretrained(path)(
                texts,
                padding=True,
                truncation=True,
                max_length=getattr(config, "candidate_max_length", None),
                return_tensors="pt",
            )
            config.num_candidates, config.candidate_length = tokens["input_ids"].shape
        if cls.__name__ in (config.architectures or []):
            model, info = cast(  # output_loading_info=True: a (model, info) pair, not the annotated Self
                "tuple[DualEncoder, dict[str, list[Any]]]",
                super().from_pretrained(path, *args, config=config, output_loading_info=True, **kwargs),
            )
        else:
            encoder, info = AutoModel.from_pretrained(path, *args, output_loading_info=True, **kwargs)
            model = cls(config)
            state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
            model.encoder.load_state_dict(state)  # strict: every tensor of the tower, none left random
            info = {**info, "missing_keys": [k for k in info["missing_keys"] if not k.startswith("pooler.")]}
            model.train(False)
        if tokens is not None:
            with torch.no_grad():
                for name in ("input_ids", "attention_mask"):
                    cast(torch.Tensor, getattr(model, f"candidate_{name}")).copy_(tokens[name])
        return (model, info) if want_info else model

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> DualEncoder:
        """Random-init model of ``config`` with zero candidate buffers of its recorded shape (skeletons)."""
        return cls(config)


def is_causal(config: Any) -> bool:
    """Decoder-only model types (Llama, GPT-2...) train as causal LMs; encoders (BERT...) as masked LMs."""
    return config.model_type in _CAUSAL_TYPES or bool(getattr(config, "is_decoder", False))


class LanguageModel:
    """The LM head class for a checkpoint: ``AutoModelForCausalLM`` for decoders, else ``...ForMaskedLM``.

    The task has one ``model_class``; which Auto class fits is a property of the checkpoint (a MiniLM
    dir has no LM head and is a ``BertModel``), so the choice is made from its config.
    """

    @staticmethod
    def _auto(config: Any) -> Any:
        return AutoModelForCausalLM if is_causal(config) else AutoModelForMaskedLM

    @classmethod
    def from_pretrained(cls, path: Any, **kwargs: Any) -> Any:
        """Load ``path`` with the fitting Auto class (label kwargs are harmless for LM heads)."""
        config = AutoConfig.from_pretrained(path, trust_remote_code=kwargs.get("trust_remote_code", False))
        return cls._auto(config).from_pretrained(path, **kwargs)

    @classmethod
    def from_config(cls, config: Any) -> Any:
        """Random-init model of ``config`` (artifact skeletons)."""
        return cls._auto(config).from_config(config)
