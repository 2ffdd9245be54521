from deploy.stores.cli import app

app()
