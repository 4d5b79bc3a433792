"""An assistant app (``tunelab serve <settings>_app.yaml``) behind one ``/v1/chat/completions`` route.

The last user message is routed in the ``assist`` queue, so concurrent requests share one intent
forward and one answer-selection forward (``apps.assistant``). A reply the generator must write
(``path: generator``) then joins the generator's continuous decode loop like any chat completion.
The response is OpenAI's chat completion plus an ``assistant`` field: the intent, the answer score,
the top stored answers and which path replied. Streaming is refused: a stored answer is one piece.
With a safety gate, a generated reply is judged before it is sent (``generation.screen``); stored
answers and the handoff message are the operator's own curated text and are not judged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request

from tunelab.apps.assistant import Decision
from tunelab.serving.generation import (
    chat_choice,
    chat_job,
    generation_usage,
    response_head,
    run_generation,
    screen,
)
from tunelab.serving.routes import MODEL_ROUTE_ERRORS, Context
from tunelab.serving.schemas import (
    AnswerCandidate,
    ApiError,
    AssistantChatResponse,
    AssistantRouting,
    ChatCompletionRequest,
    Usage,
)


def _routing(decision: Decision) -> AssistantRouting:
    return AssistantRouting(
        intent=decision.intent,
        intent_confidence=decision.intent_confidence,
        answer_score=decision.answer_score,
        path=decision.path,
        candidates=[AnswerCandidate.model_validate(c) for c in decision.candidates],
    )


def add_assistant_route(app: FastAPI, ctx: Context) -> None:
    """``/v1/chat/completions`` answering the conversation's last user message as the assistant."""
    predictor = ctx.predictor

    @app.post("/v1/chat/completions", response_model=AssistantChatResponse, responses=MODEL_ROUTE_ERRORS)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        """Answer the last user message: a stored answer, the generator, or the handoff message."""
        ctx.check_model(body.model)
        if body.stream:
            raise ApiError(422, "stream: the assistant answers in one piece; send stream false", "stream")
        last = len(body.messages) - 1
        if body.messages[last].role != "user":
            where = f"messages[{last}].role"
            raise ApiError(422, f"{where}: the assistant answers a user message; end with one", where)
        ctx.refuse_blank(
            [(f"messages[{i}].content", m.content) for i, m in enumerate(body.messages) if m.role == "user"]
        )
        message = body.messages[last].content
        [n_tokens] = await ctx.count_tokens([(f"messages[{last}].content", message)])
        ctx.log(request, [message])
        deadline = ctx.deadline()  # one for the whole request: routing, decoding, the safety gate
        [decision] = await ctx.run("assist", [message], deadline)
        head = response_head("chatcmpl", predictor.model_id)
        if decision.reply is not None:
            ctx.metrics.tokens.labels("input").inc(n_tokens)  # a generated reply counts its whole prompt
            loop = asyncio.get_running_loop()
            [n_reply] = await loop.run_in_executor(
                ctx.runtime.tokenize, predictor.count_tokens, [decision.reply], False
            )
            usage = Usage(prompt_tokens=n_tokens, completion_tokens=n_reply, total_tokens=n_tokens + n_reply)
            reply = chat_choice(decision.reply, "stop")
        else:
            generated = await run_generation(ctx, await chat_job(ctx, body, request), deadline)
            result, flagged = await screen(ctx, generated, request, deadline)
            usage = generation_usage(result)
            reply = chat_choice(result.text, result.finish_reason, flagged)
        return AssistantChatResponse(**head, choices=[reply], usage=usage, assistant=_routing(decision))
