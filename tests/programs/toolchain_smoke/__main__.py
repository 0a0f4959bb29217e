"""One local command and one random password: enough to prove the toolchain end to end."""
import pulumi
import pulumi_random as random
from pulumi_command import local

password = random.RandomPassword("db-password", length=24, special=False)
hello = local.Command("hello", create="echo hello-from-local-command")

pulumi.export("stdout", hello.stdout)
pulumi.export("password", password.result)
