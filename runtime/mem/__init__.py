"""KV memory: the token-paged pool (``kv_pool``) and the RadixAttention prefix cache (``radix_cache``)."""
