"""``/v1/predict`` of token classification: raw texts or pre-split words in, entities out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator

from tunelab.tasks.schemas import ExplainOptions, Explanations, RequestBody, Texts

Word = Annotated[str, Field(min_length=1)]
Sentence = Annotated[list[Word], Field(min_length=1)]


class TokensRequest(RequestBody, ExplainOptions):
    """``/v1/predict`` of a token classification model: raw texts, or sentences already split into words.

    Words from the caller's own segmenter (Japanese, Chinese, Thai) are tagged as given, so they can be
    the words the model was trained on. With ``explain``, each entity is explained by its first word's tag.
    """

    inputs: str | Texts | None = Field(default=None, description="One raw text or a list of raw texts.")
    tokens: Annotated[list[Sentence], Field(min_length=1)] | None = Field(
        default=None, description='Sentences as lists of words, e.g. [["東京", "に", "行く"]].'
    )

    @field_validator("tokens")
    @classmethod
    def _visible_words(cls, tokens: list[list[str]] | None) -> list[list[str]] | None:
        for i, sentence in enumerate(tokens or []):
            for j, word in enumerate(sentence):
                if not word.strip():
                    raise ValueError(
                        f"tokens[{i}][{j}] is only whitespace; give words with a visible character"
                    )
        return tokens

    @model_validator(mode="after")
    def _one_input(self) -> TokensRequest:
        if (self.inputs is None) == (self.tokens is None):
            raise ValueError("give exactly one of inputs (raw texts) or tokens (sentences as lists of words)")
        return self


def token_records(body: TokensRequest) -> list[dict[str, Any]]:
    """A request -> raw records: ``text`` is a raw text or a sentence's list of words."""
    if body.tokens is not None:
        return [{"text": words} for words in body.tokens]
    return [{"text": text} for text in ([body.inputs] if isinstance(body.inputs, str) else body.inputs or [])]


class Entity(BaseModel):
    """One predicted entity: its type, text, character span and word span in the input."""

    type: str = Field(description="Entity type, e.g. person.")
    text: str = Field(description="The entity's text, equal to the input text[start:end].")
    start: int = Field(description="Character offset of the first character in the input text.")
    end: int = Field(description="Character offset just past the last character.")
    word_start: int = Field(
        description="Index of the entity's first word (of the given tokens, or of the text's words)."
    )
    word_end: int = Field(description="Index just past its last word.")
    score: float = Field(description="Mean probability of the entity's word tags.")


class EntitiesPrediction(BaseModel):
    """The entities found in one input (for given tokens, the text is the words joined by spaces)."""

    entities: list[Entity] = Field(description="Entities in text order.")
    explanations: Explanations = None


class TokenClassificationResponse(BaseModel):
    """``/v1/predict`` response of a token classification model: the model id and one result per input."""

    model: str
    predictions: list[EntitiesPrediction] = Field(description="One per input, in input order.")


def token_classification_response(
    model: str, predictions: Sequence[dict[str, Any]]
) -> TokenClassificationResponse:
    """Map the token classification task's postprocess output to the response schema."""
    return TokenClassificationResponse(
        model=model, predictions=[EntitiesPrediction.model_validate(p) for p in predictions]
    )
