# moat's orchestrator on every Nomad client with meta { moat_node = "true" } (as E2B runs its
# orchestrator): a system job, raw_exec, since it creates network namespaces, nftables rules and
# gVisor sandboxes on the host itself. Needs moat installed on each client (docs/deploy.md) and
# raw_exec enabled (plugin "raw_exec" { config { enabled = true } }). Keep other jobs off these
# clients: sandboxes run code nobody reviewed.
#
# Secrets come from Nomad Variables (readable by every moat job at nomad/jobs):
#   nomad var put nomad/jobs node_token=$(openssl rand -hex 32) [aws_access_key_id=… aws_secret_access_key=…]
#
# Stopping the task stops only the orchestrator (kill_signal SIGTERM); Nomad then kills what is left
# in the task's cgroup, sandboxes included: drain a node first (`moat node drain <id>`).

variable "moat_binary" {
  type        = string
  default     = "/usr/local/bin/moat"
  description = "moat's CLI on each client"
}

variable "api_url" {
  type        = string
  description = "where nodes register and heartbeat, e.g. http://moat-api.service.consul:3000"
}

variable "artifacts" {
  type        = string
  description = "shared templates, snapshots and volumes: s3://bucket/prefix or a directory every client mounts"
}

variable "aws_region" {
  type    = string
  default = "us-east-1"
}

job "moat-orchestrator" {
  type        = "system"
  datacenters = ["*"]

  constraint {
    attribute = "${meta.moat_node}"
    value     = "true"
  }

  update {
    max_parallel = 1
    stagger      = "60s"
  }

  group "orchestrator" {
    network {
      port "rpc" {
        static = 5008
      }
      port "node_proxy" {
        static = 5007
      }
    }

    service {
      name     = "moat-orchestrator"
      port     = "rpc"
      provider = "nomad"

      check {
        type     = "tcp"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "orchestrator" {
      driver       = "raw_exec"
      kill_signal  = "SIGTERM"
      kill_timeout = "60s"

      config {
        command = var.moat_binary
        args    = ["orchestrator", "--host=${attr.unique.network.ip-address}", "--port=5008"]
      }

      env {
        MOAT_NODE_ID           = "${node.unique.name}"
        MOAT_NODE_ADDRESS      = "${attr.unique.network.ip-address}"
        MOAT_NODE_PROXY_PORT   = "5007"
        MOAT_API_URL           = var.api_url
        MOAT_ARTIFACTS         = var.artifacts
        MOAT_ARTIFACT_CACHE_MB = "20480"
        AWS_REGION             = var.aws_region
      }

      template {
        destination = "secrets/moat.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs" -}}
          MOAT_NODE_TOKEN={{ .node_token }}
          {{ if .aws_access_key_id }}AWS_ACCESS_KEY_ID={{ .aws_access_key_id }}{{ end }}
          {{ if .aws_secret_access_key }}AWS_SECRET_ACCESS_KEY={{ .aws_secret_access_key }}{{ end }}
          {{- end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 1024
      }
    }
  }
}
