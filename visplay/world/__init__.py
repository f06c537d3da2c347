"""The synthetic world the tiny system plays in: a tiny offline Qwen2.5-VL and an image corpus."""
