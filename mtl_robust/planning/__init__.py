"""The sweep planner: what a pipeline command would train and attack, and about how long it takes."""
