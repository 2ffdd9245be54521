from deploy.chaos.cli import app

app(prog_name="python -m deploy.chaos")
