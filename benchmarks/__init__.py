"""tfkd benchmarks: teacher vs student vs distilled student vs incumbents."""
