"""Schedules, pure: cron and interval instants in a zone, the daylight-saving policy, and the
catch-up and overlap decisions the promoter applies (DESIGN §8). No I/O, no asyncio."""
