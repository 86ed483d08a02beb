"""sglc runtime: the serving engine (scheduler, radix cache, KV pool, model runner, servers)."""
