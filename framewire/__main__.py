from framewire.cli import app

app(prog_name="framewire")
