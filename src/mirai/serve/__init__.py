"""`mirai serve`: watch rollouts stream live in the browser, steer them mid-stream, compare two models side by side.

`streams` holds the engine that steps every viewer's rollout a chunk at a time, `app` the web app (page, API and
socket, token gate), `server` the command that loads the models once and runs it under uvicorn.
"""
