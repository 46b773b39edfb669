"""The web inbox: the agency's desk in a browser, served by the agent on 127.0.0.1.

Owns nothing itself; see app (start/stop), security (login, sessions, CSRF, headers), pages
(templates, rendering), inbox (the inbox, message, quarantine and export pages); compose and
coord add the compose forms and the coordinator's view when present.
"""
