from deploy.simulator.cli import app

app(prog_name="python -m deploy.simulator")
