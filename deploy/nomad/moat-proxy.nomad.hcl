# moat's client proxy: a service job of any number of stateless instances on a static port, behind
# the load balancer that *.<domain> points at (docker driver, the image from deploy/container). Each
# request is looked up in the Redis catalog and forwarded to the node proxy of the sandbox's node.
#
# Secrets come from Nomad Variables: nomad var put nomad/jobs node_token=… (shared with the other jobs)

variable "image" {
  type    = string
  default = "registry.example.com/moat:0.1.0"
}

variable "domain" {
  type        = string
  description = "sandbox hosts are <port>-<sandboxID>.<domain>"
}

variable "api_url" {
  type        = string
  description = "the API, for auto-resume of paused sandboxes, e.g. http://moat-api.service.consul:3000"
}

variable "redis_url" {
  type    = string
  default = "redis://redis.service.consul:6379"
}

job "moat-proxy" {
  type        = "service"
  datacenters = ["*"]

  group "proxy" {
    count = 2

    network {
      port "http" {
        static = 3002
        to     = 3002
      }
    }

    service {
      name     = "moat-proxy"
      port     = "http"
      provider = "nomad"

      check {
        type     = "tcp"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "proxy" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
        args  = ["proxy", "--host=0.0.0.0", "--port=3002", "--domain=${var.domain}"]
      }

      env {
        MOAT_REDIS_URL = var.redis_url
        MOAT_API_URL   = var.api_url
      }

      template {
        destination = "secrets/moat.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs" }}MOAT_NODE_TOKEN={{ .node_token }}{{ end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
