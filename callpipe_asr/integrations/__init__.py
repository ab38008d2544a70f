"""Requests this server makes on a client's behalf: remote audio and result callbacks.

Both go through :mod:`.outbound`, one guard against server-side request forgery: a client
naming a URL must not be able to make this server reach its own loopback, the LAN behind it or a
cloud metadata service.

- :mod:`.remote_audio`: fetch audio a client names by URL (Deepgram ``url``, AssemblyAI
  ``audio_url``, Google ``uri``).
- :mod:`.callbacks`: post results when a job ends (Deepgram ``callback``, AssemblyAI
  ``webhook_url``, Watson ``callback_url``), with retries; Watson's callback registration check.
"""
