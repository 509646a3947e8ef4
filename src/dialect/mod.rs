//! The two wire dialects (OpenAI Chat Completions, Anthropic Messages): SSE framing and conversion between them.
