"""A small OpenAI-compatible chat-completions server on loopback that runs a local causal LM (the tiny test
model): what the paraphrase augmenter's HTTP path talks to in tests, in place of a vLLM server. It generates with
transformers itself (chat template, sampling seeded by the request's `seed`, `n` choices, `max_tokens`), so the
client is tested against a real model's answers, never canned ones."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Self


def make_app(model_dir: Path, served_name: str, delays: list[float] | None = None) -> Any:
    """`delays`: seconds the n-th request waits before it is answered (the last for every later one), as a slow
    server's would; requests wait side by side."""
    import torch
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    lock = threading.Lock()
    counting = threading.Lock()
    app = FastAPI()
    app.state.requests = []

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served_name, "object": "model", "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]) -> Any:
        with counting:  # requests arrive side by side: each takes its own number
            app.state.requests.append(body)
            number = len(app.state.requests)
        if delays:
            time.sleep(delays[min(number, len(delays)) - 1])
        if body.get("model") != served_name:
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} not found"}}, status_code=404)
        prompt = tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        n = int(body.get("n", 1))
        with lock, torch.inference_mode():
            torch.manual_seed(int(body.get("seed") or 0))
            out = model.generate(
                **inputs,
                do_sample=True,
                temperature=float(body.get("temperature", 1.0)),
                top_p=float(body.get("top_p", 1.0)),
                top_k=0,
                max_new_tokens=int(body.get("max_tokens", 16)),
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return {
            "id": f"chatcmpl-{len(app.state.requests)}",
            "object": "chat.completion",
            "model": served_name,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "length"}
                for i, t in enumerate(texts)
            ],
        }

    return app


class LoopbackServer:
    """uvicorn in a thread on 127.0.0.1, on a free port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the loopback server did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
