from deploy.devstack.cli import app

app(prog_name="python -m deploy.devstack")
