"""The runbook's own text for the host files of section 3.2, verbatim, for the tests that apply
it as written (the lab container, the lab VM)."""

# Runbook 3.2 step 3, verbatim.
RUNBOOK_LIMITS = """hft_user soft nofile 65536
hft_user hard nofile 65536
hft_user soft memlock unlimited
hft_user hard memlock unlimited
hft_user soft rtprio 99
hft_user hard rtprio 99
"""
RUNBOOK_SYSCTL = """# Network tuning
net.ipv4.tcp_nodelay=1
net.ipv4.tcp_low_latency=1
net.core.rmem_max=134217728
net.core.wmem_max=134217728
net.ipv4.tcp_rmem=4096 87380 67108864
net.ipv4.tcp_wmem=4096 65536 67108864

# Memory
vm.swappiness=1
vm.overcommit_memory=1

# Huge pages
vm.nr_hugepages=4096

# File handles
fs.file-max=2097152
"""
