"""publish: training exports (TRL, ShareGPT, OpenAI JSONL), conversation windows, the data card, hub push."""
