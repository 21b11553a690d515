"""The challenge server: teams, phases, a label-reveal budget, one submission, a leaderboard."""
