"""The runtime's network servers: thin adapters over one :class:`runtime.engine.Engine`.

- :mod:`.grpc_server` — the ``sglc.v1.Runtime`` gRPC service (proto/sglc.proto) plus gRPC health.
- :mod:`.http_server` — FastAPI app: SGLang's native ``/generate`` and admin routes.
- :mod:`.openai_api` — the OpenAI-compatible ``/v1`` routes.
- :mod:`.launch` — ``sglc serve``: builds the engine, runs both servers, drains on SIGTERM.

No serving logic lives here: requests map onto ``Engine.async_generate/async_score/warm/abort/
flush_cache/model_info/metrics`` and validation onto ``SamplingParams.from_dict``.
"""
