"""Telling people: the events the stack sends and how they reach Slack, PagerDuty, e-mail and a
webhook. Depends on nothing of the project, so it can be reused or replaced whole."""
