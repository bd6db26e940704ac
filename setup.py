from setuptools import find_packages, setup

setup(
    name="mitrity-llm-gateway",
    version="0.1.0",
    description="TLS-terminating egress gateway that governs AI agents' calls to LLM providers",
    packages=find_packages(include=["gateway", "gateway.*", "workers", "workers.*", "policy_sync", "policy_sync.*"]),
    package_data={"gateway.usage": ["prices.yaml"]},
    python_requires=">=3.11",
    install_requires=[
        "gunicorn[gevent]==27.0.1",
        "gevent==26.9.0",
        "requests==2.34.2",
        "urllib3==2.8.0",
        "pyyaml==6.0.4",
        "msgpack==1.2.4",
        "posix-ipc==1.3.2",
        "cryptography==50.0.2",
        "google-re2==1.1.20251105",
        "prometheus-client==0.26.0",
    ],
    extras_require={
        "test": [
            "pytest==9.2.0",
            "hypothesis==6.170.27",
            "anthropic==2.17.0",
            "openai==3.60.0",
            "helm-python-sdk==0.2.2",
        ],
    },
    entry_points={"console_scripts": ["mitrity-llm-gateway=gateway.cli:main"]},
)
