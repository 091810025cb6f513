"""Model backends behind one interface (base.ChatBackend): local transformers, vLLM, OpenAI-compatible APIs, a fake
for tests; the call cache, rate limits and the gateway that counts calls and cost.

Not empty on purpose: DVC warns "is empty" for an empty file it hashes, and every stage that calls a model lists this
file in its deps."""
