"""On-call commands over the Automation API (DESIGN.md section 1): every action is also a
reviewable config change in the stack file. `python -m ops --help`."""
