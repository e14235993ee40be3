"""Text side: SentencePiece `SiglipTokenizer`, Gemma / `Siglip2Tokenizer`, big_vision canonicalisation, shared
batching (truncation, padding, output types), the exact per-word id cache, and vocabulary training."""
