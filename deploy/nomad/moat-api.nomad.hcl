# moat's REST API: a service job of any number of stateless instances sharing one PostgreSQL
# database, in the image from deploy/container (docker driver). Uploaded template files live in
# the data directory, which every instance must share: a host volume "moat-api-files" on the clients
# backed by a shared mount (NFS).
#
# Secrets come from Nomad Variables:
#   nomad var put nomad/jobs node_token=…                       (shared with the other moat jobs)
#   nomad var put nomad/jobs/moat-api database_url=postgres://… admin_token=$(openssl rand -hex 32)

variable "image" {
  type    = string
  default = "registry.example.com/moat:0.1.0"
}

variable "domain" {
  type        = string
  description = "sandbox hosts are <port>-<sandboxID>.<domain>"
}

variable "public_url" {
  type        = string
  description = "where SDKs reach the API (E2B_API_URL)"
}

variable "redis_url" {
  type    = string
  default = "redis://redis.service.consul:6379"
}

job "moat-api" {
  type        = "service"
  datacenters = ["*"]

  group "api" {
    count = 2

    network {
      port "http" {
        to = 3000
      }
    }

    volume "files" {
      type   = "host"
      source = "moat-api-files"
    }

    service {
      name     = "moat-api"
      port     = "http"
      provider = "nomad"

      check {
        type     = "http"
        path     = "/health"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "api" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
        args  = ["api", "--host=0.0.0.0", "--port=3000", "--domain=${var.domain}", "--data-dir=/var/lib/moat"]
      }

      volume_mount {
        volume      = "files"
        destination = "/var/lib/moat"
      }

      env {
        MOAT_REDIS_URL      = var.redis_url
        MOAT_API_PUBLIC_URL = var.public_url
      }

      template {
        destination = "secrets/moat.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs" }}MOAT_NODE_TOKEN={{ .node_token }}{{ end }}
          {{ with nomadVar "nomad/jobs/moat-api" -}}
          DATABASE_URL={{ .database_url }}
          MOAT_ADMIN_TOKEN={{ .admin_token }}
          {{- end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
